"""What a local tuning trial spends outside training, on the process backend.

Runs a small study (the launcher's own `run_study`, one trial at a time) on the sample data
and timestamps each trial's log lines as they arrive:
  start-up  process start, imports, data scan, model build: until the `device ...` line
  training  from there to the last `epoch=` line (the part the hyperparameters pay for)
  wind-down test-set evaluation, model write, exit
  tuner     the trial's wall time minus the job's (Optuna, thread, bookkeeping)
Prints the median of each over the trials, and the overhead's share of the trial.

    .venv/bin/python benchmarks/tune_overhead.py [--trials 5] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the launcher package

from dogbreed.sample_data import write_sample_data  # noqa: E402
from launcher import jobs  # noqa: E402
from launcher.config import Config  # noqa: E402
from launcher.job_dir import prepare_training_dir  # noqa: E402
from launcher.local_tune import TrialJob, run_study, trials_summary  # noqa: E402


class TimedJob(jobs.RunningJob):
    """A RunningJob that notes when each kind of line arrived."""

    def __init__(self, *args, **kwargs):
        self.started = time.monotonic()
        self.ready = self.last_epoch = self.ended = None
        super().__init__(*args, **kwargs)

    def lines(self):
        for line in super().lines():
            now = time.monotonic()
            if line.startswith("device ") and self.ready is None:
                self.ready = now
            if line.startswith("epoch="):
                self.last_epoch = now
            yield line
        self.ended = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tune_overhead_"))
    write_sample_data(folder / "data", classes=5, images_per_class=30, seed=0)
    channels = jobs.data_channels(folder / "data")
    timed: dict[str, TimedJob] = {}

    def start(name, hyperparameters):
        job_dir = folder / "jobs" / name
        prepare_training_dir(job_dir, hyperparameters, channels)
        env = dict(os.environ, SAGEMAKER_BASE_DIR=str(job_dir), PYTHONUNBUFFERED="1")
        timed[name] = TimedJob(name, [sys.executable, "-m", "dogbreed.train"], env,
                               job_dir / "train.log")
        return timed[name]

    def outcome(job, code):
        return jobs.process_outcome(job, folder / "jobs" / job.name, code)

    config = Config.model_validate({"tuning": {
        "strategy": "Random", "max_jobs": args.trials, "max_parallel_jobs": 1,
        "ranges": {"lr": {"type": "continuous", "min": 5e-4, "max": 3e-3,
                          "scaling": "Logarithmic"}}}})
    static = {"epochs": args.epochs, "batch-size": 16, "image-size": 64, "pretrained": "none",
              "trainable": "all", "patience": 0}
    study = run_study(config, folder / "study", TrialJob(start, outcome), static, seed=0)
    rows = {row["job"]: row for row in trials_summary(study)}
    parts = {"start-up": [], "training": [], "wind-down": [], "tuner": [], "trial": []}
    for name, job in timed.items():
        parts["start-up"].append(job.ready - job.started)
        parts["training"].append(job.last_epoch - job.ready)
        parts["wind-down"].append(job.ended - job.last_epoch)
        parts["tuner"].append(rows[name]["seconds"] - (job.ended - job.started))
        parts["trial"].append(rows[name]["seconds"])
    medians = {key: statistics.median(values) for key, values in parts.items()}
    overhead = medians["start-up"] + medians["wind-down"] + max(medians["tuner"], 0)
    print(f"{args.trials} trials of {args.epochs} epoch(s), 120 training images at 64 px, "
          "one at a time (medians, seconds):")
    for key, value in medians.items():
        print(f"  {key:<10} {value:6.2f}")
    print(f"  overhead per trial {overhead:.2f} s = {overhead / medians['trial']:.0%} of the "
          f"trial; training {medians['training'] / args.epochs:.2f} s per epoch")


if __name__ == "__main__":
    main()
