"""The multi-model-server entry point: exactly one class, as MMS requires of this module.

MMS loads this module in each worker, calls `initialize` once (which runs `model_fn`) and
`handle` per request batch.
"""

from __future__ import annotations

from sagemaker_inference.default_handler_service import DefaultHandlerService

from dogbreed.serving.handler import BreedTransformer


class HandlerService(DefaultHandlerService):
    def __init__(self):
        super().__init__(transformer=BreedTransformer())
