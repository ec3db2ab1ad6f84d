"""Does the cached data pipeline learn as well as the PIL loader? Test accuracy across seeds.

Runs the training program (`python -m dogbreed.train`, as the container does) on the same
sample data for each seed with `data-pipeline=pil` and `data-pipeline=cached`, and prints
each job's test accuracy, the mean and standard deviation per pipeline, and the
difference of the means beside the seed-to-seed noise.

    .venv/bin/python benchmarks/pipeline_accuracy.py [--seeds 0,1,2,3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # launcher, from the checkout
from dogbreed.sample_data import write_sample_data  # noqa: E402
from launcher.job_dir import prepare_training_dir  # noqa: E402


def run(base: Path, data: Path, hyperparameters: dict) -> dict:
    prepare_training_dir(base, hyperparameters, {name: data / name
                                                 for name in ("train", "valid", "test")})
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dogbreed.train"],
                            env=dict(os.environ, SAGEMAKER_BASE_DIR=str(base)),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"job failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    metrics = json.loads((base / "model" / "model.json").read_text())["metrics"]
    return {"test_accuracy": metrics["test_accuracy"], "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--images-per-class", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_sample_data(data, args.classes, args.images_per_class, seed=0)
        results = {"pil": [], "cached": []}
        for seed in seeds:
            for pipeline in results:
                hyperparameters = {"epochs": args.epochs, "batch-size": 16,
                                   "image-size": args.image_size, "pretrained": "none",
                                   "trainable": "all", "lr": 0.001, "patience": 0,
                                   "seed": seed, "data-pipeline": pipeline}
                outcome = run(Path(tmp) / f"{pipeline}-{seed}", data, hyperparameters)
                results[pipeline].append(outcome["test_accuracy"])
                print(f"seed {seed} {pipeline}: test_accuracy {outcome['test_accuracy']:.4f} "
                      f"({outcome['seconds']:.0f} s)", flush=True)
    for pipeline, accuracies in results.items():
        print(f"{pipeline}: mean {statistics.mean(accuracies):.4f}, standard deviation "
              f"{statistics.stdev(accuracies) if len(accuracies) > 1 else 0:.4f} over "
              f"{len(accuracies)} seeds")
    difference = statistics.mean(results["cached"]) - statistics.mean(results["pil"])
    print(f"cached - pil: {difference:+.4f}")


if __name__ == "__main__":
    main()
