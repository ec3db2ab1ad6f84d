"""`python -m dogbreed.train`: the training image's `train`, and what torchrun starts on
each GPU (the recipe is `dogbreed.training.run`)."""

import atexit
import os
import sys

from dogbreed.training.run import main


def exit_without_teardown(code: int) -> None:
    """Exit once the job is done and its files are closed, skipping the interpreter's
    teardown (freeing the model, the stores and torch's modules one by one): 1.7-2.8 s
    per job measured, which every trial of a tuning job paid. The exit handlers still run
    (multiprocessing's ends the loader workers), and the streams are flushed."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    exit_without_teardown(main())
