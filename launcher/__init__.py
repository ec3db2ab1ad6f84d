"""`python -m launcher`: drives data, tuning, training and serving on three backends.

Never imports torch at module import time: the CLI must start fast and work on a laptop
without torch for the `sagemaker` backend.
"""
