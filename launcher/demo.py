"""`make demo`: the whole flow on the process backend, offline, on the CPU.

sample data -> tune (a few small trials, 2 at a time) -> train with the best
hyperparameters -> deploy (a local serve process) -> predict on test images -> report ->
cleanup -> evaluate on the test split (a batch transform of it). Each step is the same `python -m launcher` command a user would type (printed
before it runs), with config/demo.toml.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from launcher.cli import main as launcher

CONFIG = "config/demo.toml"
STEPS = 8


def step(number: int, argv: list[str]) -> None:
    print(f"\n=== {number}/{STEPS}  python -m launcher {' '.join(argv)}", flush=True)
    code = launcher(argv)
    if code != 0:
        raise SystemExit(f"demo step {number} failed (exit {code}); see the messages above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.demo", description=__doc__)
    parser.add_argument("--out", default="demo_output", help="folder the demo config writes "
                        "to; removed first (default demo_output)")
    args = parser.parse_args(argv)
    if Path(args.out).exists():
        shutil.rmtree(args.out)
    started = time.monotonic()
    common = ["--config", CONFIG]
    data = Path(args.out) / "data"
    workdir = Path(args.out) / "runs"
    step(1, ["data", "--synthetic", *common])
    step(2, ["tune", *common, "--seed", "0"])
    best = workdir / "tuning" / "dogbreed-tune" / "best.json"
    # The final job shows the debugger, two rules (one able to stop it) and a profiler
    # window, so its report has every section.
    step(3, ["train", *common, "--hyperparameters", str(best),
             "--debugger-collections", "losses,metrics,weights,gradients",
             "--rule", "ExplodingTensor:stop", "--rule", "LossNotDecreasing",
             "--profiler-window", "5:3"])
    images = [sorted(folder.glob("*.jpg"))[0] for folder in sorted((data / "test").iterdir())][:3]
    try:
        step(4, ["deploy", *common])
        step(5, ["predict", *common, *map(str, images), "--top-k", "3"])
    finally:
        step(6, ["cleanup", *common])
    step(7, ["report", *common])
    step(8, ["evaluate", *common])
    state = json.loads((workdir / "state.json").read_text())
    job = state["last_training"]["job"]
    model = json.loads((Path(state["last_training"]["artifact"]) / "model.json").read_text())
    found = json.loads(best.read_text())
    print(f"\ndemo done in {time.monotonic() - started:.0f} s. Best tuning job "
          f"{found['best_job']} ({found['objective']['name']}="
          f"{found['objective']['value']:.4f}); final model: test accuracy "
          f"{model['metrics'].get('test_accuracy', float('nan')):.3f} over "
          f"{model['num_classes']} breeds (chance {1 / model['num_classes']:.2f}).\n"
          "Look at:\n"
          f"  {workdir / 'tuning/dogbreed-tune/jobs.txt'}   every tuning job and its result\n"
          f"  {workdir / 'tuning/dogbreed-tune/trials.png'}  the trials plotted\n"
          f"  {best}  the best hyperparameters (train --hyperparameters takes it)\n"
          f"  {workdir / 'reports' / (job + '.html')}  the training report (a browser)\n"
          f"  {workdir / 'evaluations' / (job + '-test') / 'evaluation.html'}  how good the "
          "model is on the test split\n"
          f"  {workdir / 'jobs' / job}/  the job's /opt/ml tree: model/, checkpoints/, "
          "output/, train.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
