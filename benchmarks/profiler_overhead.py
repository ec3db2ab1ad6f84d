"""What the profiler adds to a training step: outside its torch.profiler window, and inside.

Times a real ResNet50 training step (forward, backward, AdamW step) on a batch in memory,
in alternating rounds of `--steps` steps, three ways:

- no profiler;
- the profiler on outside its window: the system sampler thread running (at
  `--interval-ms`) and the step timeline recorded by `on_step_end`;
- inside a torch.profiler window (CPU activities, plus CUDA on a GPU) of `--steps` steps
  after one warm-up step; the trace export at the window's end is timed on its own (the
  window's last step is timed without it).

Median step time per way and its ratio to no profiler; the target outside the window is
under 2 %. As that is within the rounds' noise on a shared machine, the hook's direct cost
outside the window is also timed on its own (one `on_step_end`; one system sample, taken
once per interval). Also the trace export's time and the trace's size per profiled step.

    .venv/bin/python benchmarks/profiler_overhead.py [--image-size 128] [--batch 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torchvision.models import resnet50

from dogbreed.profiling.profiler import ProfilerHook
from dogbreed.training.callbacks import StepResult, TrainState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per round (and window)")
    parser.add_argument("--interval-ms", type=int, default=500, help="sampling period")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = resnet50(num_classes=133).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 133, (args.batch,), device=device)
    criterion = torch.nn.CrossEntropyLoss()
    state = TrainState(model=model, optimizer=optimizer, epochs=1)

    def train_step() -> StepResult:
        started = time.perf_counter()
        outputs = model(images)
        loss = criterion(outputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        state.global_step += 1
        return StepResult(1, state.global_step, 10, loss.detach(), outputs.detach(), labels,
                          args.batch, 0.0, time.perf_counter() - started)

    def new_hook(num_steps: int) -> ProfilerHook:
        folder = Path(tempfile.mkdtemp(prefix="profiler_overhead_"))
        # The window starts at the round's second step: the first warms the profiler up.
        return ProfilerHook(folder, args.interval_ms / 1000, state.global_step + 2,
                            num_steps, log=lambda *a, **k: None)

    def timed_round(hook: ProfilerHook | None, hold_last: bool = False):
        """Step times, and the last step's result when its `on_step_end` is held back."""
        times, result = [], None
        for index in range(args.steps):
            started = time.perf_counter()
            result = train_step()
            if hook is not None and not (hold_last and index == args.steps - 1):
                hook.on_step_end(state, result)
            times.append(time.perf_counter() - started)
        return times, result

    model.train()
    for _ in range(2):
        train_step()  # warm-up
    timings: dict[str, list[float]] = {"no profiler": [], "profiler, outside the window": [],
                                       "inside the torch.profiler window": []}
    exports, sizes = [], []
    for _ in range(args.rounds):
        timings["no profiler"] += timed_round(None)[0]

        hook = new_hook(0)
        hook.on_train_begin(state)
        timings["profiler, outside the window"] += timed_round(hook)[0]
        hook.on_train_end(state)

        hook = new_hook(args.steps)
        hook.on_train_begin(state)
        hook.on_step_end(state, train_step())  # the warm-up step
        times, last = timed_round(hook, hold_last=True)
        timings["inside the torch.profiler window"] += times
        started = time.perf_counter()
        hook.on_step_end(state, last)  # the window's end: the trace is exported
        exports.append(time.perf_counter() - started)
        sizes.append((hook.out_dir / "torch_trace.json").stat().st_size / args.steps)
        hook.on_train_end(state)

    base = statistics.median(timings["no profiler"])
    print(f"ResNet50 training step on {device.type}, batch {args.batch} at {args.image_size} px, "
          f"{torch.get_num_threads()} threads, sampling every {args.interval_ms} ms; "
          f"medians of {args.rounds} rounds x {args.steps} steps")
    print(f"{'':<34} {'step':>10} {'ratio':>8}")
    for label, values in timings.items():
        median = statistics.median(values)
        print(f"{label:<34} {median * 1000:>7.1f} ms {median / base:>8.3f}")
    # The direct cost outside the window, free of the rounds' noise: one on_step_end, and
    # one system sample (the thread takes one per interval).
    hook = new_hook(0)
    hook.on_train_begin(state)
    result = train_step()
    started = time.perf_counter()
    for _ in range(1000):
        hook.on_step_end(state, result)
    per_step = (time.perf_counter() - started) / 1000
    started = time.perf_counter()
    for _ in range(20):
        hook.sampler.sample()
    per_sample = (time.perf_counter() - started) / 20
    hook.on_train_end(state)
    share = (per_step + per_sample * base / (args.interval_ms / 1000)) / base
    print(f"direct cost outside the window: on_step_end {per_step * 1e6:.1f} us, one system "
          f"sample {per_sample * 1000:.2f} ms; {share:.3%} of a step")
    print(f"trace export at the window's end: {statistics.median(exports):.2f} s; trace "
          f"size {statistics.median(sizes) / 1e6:.2f} MB per profiled step")


if __name__ == "__main__":
    main()
