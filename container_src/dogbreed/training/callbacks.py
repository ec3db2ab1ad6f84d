"""Extension points of the training loop: the debugger and profiler plug in here.

A callback sees the state after every step and every epoch; it may set
`state.stop_reason` to end training early (the loop stops after the current step and the
reason becomes the job's outcome). Callbacks run on every rank; `state.is_main` tells
rank 0, the only one that should write files or log.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

PROGRESS_SECONDS_ENV = "DOGBREED_PROGRESS_SECONDS"


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    rank: int = 0
    world_size: int = 1
    epoch: int = 1
    global_step: int = 0
    stop_reason: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class StepResult:
    """One optimizer step. Tensors are detached and stay on the device: reading them
    (`.item()`) forces a GPU sync, so a callback should do it only on steps it keeps."""
    epoch: int
    step: int  # 1-based within the epoch
    steps_in_epoch: int
    loss: torch.Tensor
    outputs: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    data_seconds: float  # waiting for the loader
    compute_seconds: float  # forward, backward, optimizer step (as the host saw it)
    optimizer_skipped: bool = False  # fp16's loss scaler found inf/NaN gradients


class Callback:
    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState, step: StepResult) -> None:
        pass

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)

    def on_train_begin(self, state: TrainState) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(state)

    def on_step_end(self, state: TrainState, step: StepResult) -> None:
        for callback in self.callbacks:
            callback.on_step_end(state, step)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(state, metrics)

    def on_train_end(self, state: TrainState) -> None:
        for callback in self.callbacks:
            callback.on_train_end(state)


class ProgressLogger(Callback):
    """A progress line every `interval_seconds` on rank 0: long epochs are not silent,
    and the lines read well in CloudWatch (no carriage-return progress bars)."""

    def __init__(self, interval_seconds: float | None = None, log=print):
        if interval_seconds is None:
            interval_seconds = float(os.environ.get(PROGRESS_SECONDS_ENV, "30"))
        self.interval = interval_seconds
        self.log = log
        self._last = time.monotonic()
        self._images = 0

    def on_step_end(self, state: TrainState, step: StepResult) -> None:
        self._images += step.batch_size * state.world_size
        now = time.monotonic()
        if not state.is_main or now - self._last < self.interval:
            return
        rate = self._images / (now - self._last)
        remaining = (step.steps_in_epoch - step.step) * step.batch_size * state.world_size
        self.log(f"progress: epoch {step.epoch}/{state.epochs} step {step.step}/"
                 f"{step.steps_in_epoch} loss {step.loss.item():.4f} {rate:.1f} img/s, "
                 f"epoch ends in ~{_duration(remaining / max(rate, 1e-9))}", flush=True)
        self._last, self._images = now, 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def describe(callbacks: list[Any]) -> str:
    return ", ".join(type(callback).__name__ for callback in callbacks) or "none"
