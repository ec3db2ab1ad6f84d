"""Head-only tuning (`trainable=fc`) with each data pipeline, side by side in one run.

The same study (the launcher's own `run_study` on the process backend, one trial at a
time, Random search over lr and weight-decay with the same seed, so every pipeline gets
the same 8 hyperparameter sets) runs once per `data-pipeline`:

  pil       decode and augment every image in every epoch (the loader before issue 14)
  cached    decode once, augment on the device, full forward pass in every step
  features  decode once, the frozen backbone once per image, the epochs train the head

The backbone is first trained briefly on the same sample data (`trainable=all`) and handed
to every trial as `pretrained=<file>`: with a random frozen backbone the head has nothing
to learn from, and no ImageNet file is reachable here. Prints each study's wall time, its
ratio to pil's, and the best trial's valid accuracy (the objective) and test accuracy.

    .venv/bin/python benchmarks/head_tune.py [--trials 8] [--epochs 6] [--image-size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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

PIPELINES = ("pil", "cached", "features")


def train_backbone(folder: Path, channels: dict, image_size: int, epochs: int) -> Path:
    """A ResNet50 trained from scratch on the sample data: the trials' frozen backbone."""
    job_dir = folder / "backbone"
    prepare_training_dir(job_dir, {"epochs": epochs, "batch-size": 16, "image-size": image_size,
                                   "pretrained": "none", "trainable": "all", "patience": 0},
                         channels)
    result = subprocess.run([sys.executable, "-m", "dogbreed.train"],
                            env=dict(os.environ, SAGEMAKER_BASE_DIR=str(job_dir)),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"backbone job failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return job_dir / "model" / "model.safetensors"


def study(folder: Path, channels: dict, static: dict, trials: int) -> dict:
    """One study; its wall time and its best trial's metrics."""
    def start(name, hyperparameters):
        job_dir = folder / "jobs" / name
        prepare_training_dir(job_dir, hyperparameters, channels)
        env = dict(os.environ, SAGEMAKER_BASE_DIR=str(job_dir), PYTHONUNBUFFERED="1")
        return jobs.RunningJob(name, [sys.executable, "-m", "dogbreed.train"], env,
                               job_dir / "train.log")

    def outcome(job, code):
        return jobs.process_outcome(job, folder / "jobs" / job.name, code)

    config = Config.model_validate({"tuning": {
        "strategy": "Random", "max_jobs": trials, "max_parallel_jobs": 1,
        "ranges": {"lr": {"type": "continuous", "min": 1e-3, "max": 3e-2,
                          "scaling": "Logarithmic"},
                   "weight-decay": {"type": "continuous", "min": 1e-5, "max": 1e-2,
                                    "scaling": "Logarithmic"}}}})
    started = time.perf_counter()
    rows = trials_summary(run_study(config, folder / "study", TrialJob(start, outcome),
                                    static, seed=0))
    seconds = time.perf_counter() - started
    completed = [row for row in rows if row["status"] == "Completed"]
    if len(completed) != trials:
        raise SystemExit(f"{len(completed)} of {trials} trials completed: {rows}")
    best = max(completed, key=lambda row: row["objective"])
    metrics = json.loads((folder / "jobs" / best["job"] / "model" / "model.json")
                         .read_text())["metrics"]
    return {"seconds": seconds, "valid_accuracy": best["objective"],
            "test_accuracy": metrics["test_accuracy"], "lr": float(best["hyperparameters"]["lr"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images-per-class", type=int, default=40)
    parser.add_argument("--backbone-epochs", type=int, default=4)
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="head_tune_"))
    write_sample_data(folder / "data", classes=5, images_per_class=args.images_per_class,
                      seed=0)
    channels = jobs.data_channels(folder / "data")
    started = time.perf_counter()
    backbone = train_backbone(folder, channels, args.image_size, args.backbone_epochs)
    print(f"backbone: {args.backbone_epochs} epochs of trainable=all in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    results = {}
    for pipeline in args.pipelines.split(","):
        static = {"epochs": args.epochs, "batch-size": 16, "image-size": args.image_size,
                  "pretrained": str(backbone), "trainable": "fc", "patience": 0,
                  "data-pipeline": pipeline}
        results[pipeline] = study(folder / pipeline, channels, static, args.trials)
        found = results[pipeline]
        print(f"{pipeline:<9} {found['seconds']:7.1f} s  best valid_accuracy "
              f"{found['valid_accuracy']:.4f}  its test_accuracy {found['test_accuracy']:.4f} "
              f"(lr {found['lr']:.4g})", flush=True)
    if "pil" in results:
        for pipeline, found in results.items():
            print(f"{pipeline:<9} wall time pil / {pipeline} = "
                  f"{results['pil']['seconds'] / found['seconds']:.2f}x")
    print(f"{args.trials} trials x {args.epochs} epochs, trainable=fc, "
          f"{args.images_per_class * 5} images at {args.image_size} px, one trial at a time; "
          f"jobs under {folder}")


if __name__ == "__main__":
    main()
