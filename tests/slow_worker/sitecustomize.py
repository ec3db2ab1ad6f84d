"""Test aid, on PYTHONPATH only in test_serve.py's slow-start test: MMS workers take
DOGBREED_TEST_SLOW_WARMUP seconds longer to load the model, as a big model on a slow disk
would. Other processes are left alone."""

import os
import sys
import time

if os.environ.get("DOGBREED_TEST_SLOW_WARMUP") and "model_service_worker" in " ".join(sys.argv):
    import dogbreed.serving.predictor as _predictor

    _original_warm_up = _predictor.BreedClassifier.warm_up

    def _slow_warm_up(self, *args, **kwargs):
        time.sleep(float(os.environ["DOGBREED_TEST_SLOW_WARMUP"]))
        return _original_warm_up(self, *args, **kwargs)

    _predictor.BreedClassifier.warm_up = _slow_warm_up
