"""`python -m dogbreed.train`: the training image's `train`, and what torchrun starts on
each GPU (the recipe is `dogbreed.training.run`)."""

import os
import sys

from dogbreed.training.run import main

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
