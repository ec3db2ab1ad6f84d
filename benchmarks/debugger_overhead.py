"""What the debugger hook adds to a training step, by configuration.

Times a real ResNet50 training step (forward, backward, AdamW step) and, on the same
model and batch, the hook's work on a step it saves (`on_step_end` including the trace
write), for: the default (`losses,metrics`), each heavier collection alone, and all of them.
The cost per step is that time divided by the save interval (the hook does nothing on the
steps in between but a modulo), shown as a share of the step. Medians over rounds.

    .venv/bin/python benchmarks/debugger_overhead.py [--image-size 128] [--batch 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torchvision.models import resnet50

from dogbreed.debugging.config import DebuggerConfig, collection_config, debugger_config
from dogbreed.debugging.hook import DebuggerHook
from dogbreed.hyperparameters import DEBUGGER_COLLECTIONS, Hyperparameters
from dogbreed.rule_specs import RULE_NAMES
from dogbreed.training.callbacks import StepResult, TrainState

CONFIGS = {"default (losses,metrics)": ["losses", "metrics"], "weights": ["weights"],
           "gradients": ["gradients"], "relu_input": ["relu_input"],
           "outputs,labels": ["outputs", "labels"],
           "all": ["losses", "metrics", "weights", "biases", "gradients", "relu_input",
                   "outputs", "labels"],
           # the rules' probes too (percentiles, active fractions, update norms, zeros)
           "all + the 11 rules": "rules"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval", type=int, default=10, help="the save interval")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnet50(num_classes=133)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 133, (args.batch,))
    criterion = torch.nn.CrossEntropyLoss()

    def train_step() -> StepResult:
        outputs = model(images)
        loss = criterion(outputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return StepResult(1, 1, 10, loss.detach(), outputs.detach(), labels, args.batch, 0.0,
                          0.0)

    model.train()
    train_step()  # warm-up
    step_times = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        train_step()
        step_times.append(time.perf_counter() - started)
    step = statistics.median(step_times)
    print(f"ResNet50 training step, batch {args.batch} at {args.image_size} px, "
          f"{torch.get_num_threads()} threads: {step * 1000:.0f} ms (median of {args.rounds})")
    print(f"{'collections':<26} {'saved step':>11} {'per step at interval ' + str(args.interval):>24}"
          f" {'share of step':>14}")
    for index, (label, names) in enumerate(CONFIGS.items()):
        # Not mkdtemp: its random part can hold "__", which smdebug's reader garbles.
        folder = Path(tempfile.gettempdir()) / f"debugger-overhead-{os.getpid()}-{index}"
        hook = DebuggerHook(config_of(names, folder), folder / "rules.json", folder / "failure",
                            log=lambda *args, **kwargs: None)
        # Past the first 10 steps, which PoorWeightInitialization also saves (with gradient
        # percentiles, about 0.5 s a step more): the steady state.
        state = TrainState(model=model, optimizer=optimizer, epochs=1, global_step=100)
        hook.on_train_begin(state)
        timings = []
        for _ in range(args.rounds):
            result = train_step()  # relu inputs are captured during this forward
            state.global_step += 1
            started = time.perf_counter()
            hook.on_step_end(state, result)
            timings.append(time.perf_counter() - started)
        hook.on_train_end(state)
        shutil.rmtree(folder, ignore_errors=True)
        saved = statistics.median(timings)
        per_step = saved / args.interval
        print(f"{label:<26} {saved * 1000:>9.1f} ms {per_step * 1000:>21.2f} ms "
              f"{per_step / step:>13.2%}")


def config_of(names, folder: Path) -> DebuggerConfig:
    """Every collection saved on every step (the cost of a saved step)."""
    if names != "rules":
        return DebuggerConfig(folder, {n: collection_config(n, 1) for n in names})
    hp = Hyperparameters(debugger_collections=",".join(DEBUGGER_COLLECTIONS),
                         debugger_save_interval=1, rules=",".join(RULE_NAMES))
    return debugger_config(hp, folder / "no-config", folder)


if __name__ == "__main__":
    main()
