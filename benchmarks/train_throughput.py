"""Is training fed fast enough? End-to-end images/s with each data pipeline versus the
model alone, for each `trainable`, side by side in one run.

Runs, in one process on one machine, alternating rounds of:
  - model only: the training step (forward, backward, optimizer) on a batch already on
    the device, i.e. the ceiling;
  - end to end, `pil`: the PIL loader (JPEG decode, augmentation per epoch, default
    worker count) feeding the same step through `train_one_epoch`;
  - end to end, `cached`: the uint8 store (decoded once, timed separately) with crops,
    flips and normalisation on the device, through the same `train_one_epoch`;
the pipelines take turns going first in a round (use an even --rounds with two).
Prints per-round figures, the medians and the ratios end to end / model only, each
pipeline's median wait for data and compute per step (the training loop's own split),
and the store's build cost in seconds per 1,000 images. With --compile also the model-only step
through torch.compile (as the `compile` hyperparameter runs it): the compile's seconds, its
speed-up, and the training images after which it has paid back (what `compile=auto`'s
threshold, dogbreed.training.compiling.AUTO_MIN_IMAGES, estimates).

    .venv/bin/python benchmarks/train_throughput.py [--trainable fc,layer4,all] [--rounds 4]
        [--compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dogbreed.hyperparameters import Hyperparameters
from dogbreed.model import build_model, set_train_mode
from dogbreed.sample_data import write_sample_data
from dogbreed.training.callbacks import Callback, CallbackList, StepResult, TrainState
from dogbreed.training.compiling import compiled, toolchain_problem
from dogbreed.training.data import scan_channel
from dogbreed.training.distributed import init_worker
from dogbreed.training.loop import EpochSums, train_one_epoch
from dogbreed.training.image_store import prepare_stores
from dogbreed.training.run import (choose_num_workers, choose_precision, make_loader,
                                  make_optimizer, make_store_loader)
from dogbreed.transforms import eval_preprocessing, train_transform


def model_only_rate(state: TrainState, precision, criterion, batch: torch.Tensor,
                    labels: torch.Tensor, steps: int) -> float:
    model, optimizer = state.model, state.optimizer
    set_train_mode(model)  # as the training loop does: frozen BatchNorm stays in eval
    started = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(batch.device.type, dtype=precision.dtype or torch.float32,
                            enabled=precision.dtype is not None):
            loss = criterion(model(batch), labels)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    if batch.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch.shape[0] / (time.perf_counter() - started)


class StepTimes(Callback):
    """Each step's wait for the loader and its compute, as the training loop measures them
    (host clock: on a GPU a step's kernels may still run after its compute ends)."""

    def __init__(self):
        self.data_seconds, self.compute_seconds = [], []

    def on_step_end(self, state: TrainState, step: StepResult) -> None:
        self.data_seconds.append(step.data_seconds)
        self.compute_seconds.append(step.compute_seconds)


def end_to_end_rate(state: TrainState, loader, precision, criterion, context,
                    times: StepTimes) -> float:
    sums = EpochSums()
    train_one_epoch(state, loader, criterion, precision, context, CallbackList([times]), sums,
                    lambda: False)
    return sums.seen / sums.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainable", default="fc,layer4,all",
                        help="comma list of fc, layer4, all")
    parser.add_argument("--pipelines", default="pil,cached", help="comma list of pil, cached")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=256, help="images per end-to-end round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--num-workers", default="auto")
    parser.add_argument("--compile", action="store_true",
                        help="also the model-only step through torch.compile")
    args = parser.parse_args()
    if args.compile and toolchain_problem():
        parser.error(f"--compile: {toolchain_problem()}; torch.compile needs it")
    pipelines = [name.strip() for name in args.pipelines.split(",") if name.strip()]

    context = init_worker()
    with tempfile.TemporaryDirectory() as tmp:
        classes = 8
        write_sample_data(tmp, classes=classes, images_per_class=args.images // classes * 10 // 8,
                          seed=0)
        channel = scan_channel("train", Path(tmp) / "train")
        preprocessing = eval_preprocessing(args.image_size)
        started = time.perf_counter()
        store = prepare_stores({"train": channel}, preprocessing, context,
                               os.cpu_count() or 1, log=lambda message: None)["train"]
        build_seconds = time.perf_counter() - started
        print(f"store: {len(channel.samples)} JPEGs decoded in {build_seconds:.2f} s = "
              f"{1000 * build_seconds / len(channel.samples):.2f} s per 1,000 images, "
              f"{store.numel() / 2**20:.0f} MiB", flush=True)
        summary = []
        for trainable in args.trainable.split(","):
            summary.append(measure(trainable.strip(), args, context, channel, store,
                                   preprocessing, pipelines, classes))
        print("\n| trainable | model only | " + " | ".join(
            f"{name} end to end | ratio" for name in pipelines) + " |")
        for trainable, model_median, medians, _ in summary:
            print(f"| `{trainable}` | {model_median:.1f} | " + " | ".join(
                f"{medians[name]:.1f} | {medians[name] / model_median:.2f}"
                for name in pipelines) + " |")
        if args.compile:
            print("\n| trainable | model only eager | compiled | speed-up | compile (s) | "
                  "pays back after (images) |\n|---|---|---|---|---|---|")
            for trainable, model_median, _, (compile_seconds, compiled_median) in summary:
                saved = 1 / model_median - 1 / compiled_median  # seconds per image
                payback = f"{compile_seconds / saved:,.0f}" if saved > 0 else "never"
                print(f"| `{trainable}` | {model_median:.1f} | {compiled_median:.1f} | "
                      f"{compiled_median / model_median:.2f} | {compile_seconds:.1f} | "
                      f"{payback} |")


def measure(trainable: str, args, context, channel, store, preprocessing, pipelines,
            classes: int) -> tuple[str, float, dict[str, float], tuple[float, float]]:
    hp = Hyperparameters(batch_size=args.batch_size, image_size=args.image_size,
                         trainable=trainable, pretrained="none",
                         num_workers=args.num_workers)
    precision = choose_precision(hp, context)
    workers = choose_num_workers(hp, context, os.cpu_count() or 1)
    loaders = {
        "pil": make_loader(channel, train_transform(preprocessing), hp, context, workers,
                           shuffle=True),
        "cached": make_store_loader(store, channel, preprocessing, hp, context, precision,
                                    train=True),
    }
    model = build_model(classes, "none", hp.trainable).to(
        context.device, memory_format=torch.channels_last if precision.channels_last
        else torch.contiguous_format)
    state = TrainState(model=model, optimizer=make_optimizer(model, hp), epochs=1)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    batch = torch.randn(hp.batch_size, 3, hp.image_size, hp.image_size, device=context.device)
    if precision.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (hp.batch_size,), device=context.device)
    steps = max(2, len(channel.samples) // hp.batch_size)

    print(f"\ndevice {context.device}, trainable={hp.trainable}, {hp.image_size} px, batch "
          f"{hp.batch_size}, precision {precision.dtype or 'fp32'}, pil loader workers "
          f"{workers}, {len(channel.samples)} JPEGs, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    model_only_rate(state, precision, criterion, batch, labels, 2)  # warm-up
    compiled_state, compile_seconds, compiled_rates = None, 0.0, []
    if args.compile:
        compiled_state = TrainState(model=compiled(model), optimizer=state.optimizer, epochs=1)
        started = time.perf_counter()
        model_only_rate(compiled_state, precision, criterion, batch, labels, 2)  # compiles
        compile_seconds = time.perf_counter() - started
        print(f"compile: {compile_seconds:.1f} s (2 steps)", flush=True)
    model_rates, e2e_rates = [], {name: [] for name in pipelines}
    times = {name: StepTimes() for name in pipelines}
    for round_number in range(1, args.rounds + 1):
        model_rates.append(model_only_rate(state, precision, criterion, batch, labels, steps))
        if compiled_state is not None:
            compiled_rates.append(model_only_rate(compiled_state, precision, criterion, batch,
                                                  labels, steps))
            print(f"round {round_number}: model only compiled {compiled_rates[-1]:.1f} img/s",
                  flush=True)
        # Each round starts with another pipeline: a fixed order let a drift in the
        # machine's speed over a round pass for a difference between pipelines.
        shift = (round_number - 1) % len(pipelines)
        for name in pipelines[shift:] + pipelines[:shift]:
            loaders[name].sampler.set_epoch(round_number)
            e2e_rates[name].append(end_to_end_rate(state, loaders[name], precision, criterion,
                                                   context, times[name]))
        print(f"round {round_number}: model only {model_rates[-1]:.1f} img/s, " + ", ".join(
            f"{name} {rates[-1]:.1f} img/s" for name, rates in e2e_rates.items()), flush=True)
    model_median = statistics.median(model_rates)
    medians = {name: statistics.median(rates) for name, rates in e2e_rates.items()}
    print(f"median: model only {model_median:.1f} img/s, " + ", ".join(
        f"{name} {median:.1f} img/s (ratio {median / model_median:.2f})"
        for name, median in medians.items()))
    for name, steps in times.items():
        print(f"median per step, {name}: waiting for data "
              f"{statistics.median(steps.data_seconds):.3f} s, compute "
              f"{statistics.median(steps.compute_seconds):.3f} s (host clock)")
    compiled_median = statistics.median(compiled_rates) if compiled_rates else 0.0
    return trainable, model_median, medians, (compile_seconds, compiled_median)


if __name__ == "__main__":
    main()
