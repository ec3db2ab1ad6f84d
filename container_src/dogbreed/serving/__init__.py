"""Serving: the program in front of multi-model-server (`server`), the handler MMS calls
(`handler`, `handler_service`), request and response formats (`codec`), and the model
as loaded for prediction (`predictor`). `python -m dogbreed.serve` starts it."""
