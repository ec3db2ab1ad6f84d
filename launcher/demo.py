"""`make demo` for now: sample data -> one training job in the process backend's layout.

Offline and CPU-only. The launcher's commands (data, tune, train, deploy, predict) will
take this over; until then it shows the training program's whole contract at work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from launcher.job_dir import prepare_training_dir

# From scratch at 64 px: the only setting that learns in a minute on 2 CPU cores without
# the ImageNet weights (which these machines cannot download).
DEMO_HYPERPARAMETERS = {"epochs": 6, "batch-size": 16, "image-size": 64, "pretrained": "none",
                        "trainable": "all", "lr": 0.001, "patience": 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.demo", description=__doc__)
    parser.add_argument("--out", default="demo_output", help="folder for data and job "
                        "(replaced; default demo_output)")
    parser.add_argument("--classes", type=int, default=5, help="breeds in the sample data")
    args = parser.parse_args(argv)

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    data, job = out / "data", out / "job"
    print(f"1/2 writing sample data to {data}", flush=True)
    subprocess.run([sys.executable, "-m", "dogbreed.sample_data", str(data),
                    "--classes", str(args.classes), "--images-per-class", "30"], check=True)

    print(f"2/2 training: SAGEMAKER_BASE_DIR={job} python -m dogbreed.train", flush=True)
    prepare_training_dir(job, DEMO_HYPERPARAMETERS,
                         {name: data / name for name in ("train", "valid", "test")})
    started = time.monotonic()
    code = subprocess.run([sys.executable, "-m", "dogbreed.train"],
                          env=dict(os.environ, SAGEMAKER_BASE_DIR=str(job))).returncode
    if code != 0:
        reason = (job / "output" / "failure").read_text().strip()
        print(f"training failed (exit {code}): {reason}", file=sys.stderr)
        return code
    description = json.loads((job / "model" / "model.json").read_text())
    final = description["metrics"]
    print(f"\ndone in {time.monotonic() - started:.0f} s: test accuracy "
          f"{final.get('test_accuracy', float('nan')):.3f} over {description['num_classes']} "
          f"breeds (chance {1 / description['num_classes']:.3f}), best epoch "
          f"{description['training']['best_epoch']}\nlook at:\n"
          f"  {job / 'model' / 'model.json'}     what serving will load (classes, "
          "preprocessing, metrics)\n"
          f"  {job / 'model' / 'metrics.json'}   per-epoch metrics\n"
          f"  {job / 'checkpoints'}/            what a restarted job resumes from")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
