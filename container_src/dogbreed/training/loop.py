"""One training epoch and one evaluation pass; nothing about jobs, files or logs.

Sums stay on the device during an epoch (no per-step GPU sync) and are read once at the
end, or when the epoch is cut short. Evaluation always runs on the unwrapped module: the
DDP wrapper would make every forward a collective, and eval shards are uneven.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dogbreed.model import set_train_mode
from dogbreed.training.callbacks import Callback, StepResult, TrainState
from dogbreed.training.distributed import DistContext, all_reduce_sum


@dataclass
class Precision:
    """Autocast dtype (None = fp32) and the loss scaler fp16 needs."""
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    channels_last: bool


@dataclass
class EpochSums:
    """Running totals of one epoch; saved in mid-epoch checkpoints."""
    step: int = 0
    loss_sum: float = 0.0  # plain cross-entropy, not the label-smoothed objective
    correct: float = 0.0
    seen: float = 0.0
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        seen = max(self.seen, 1.0)
        return {"train_loss": self.loss_sum / seen, "train_accuracy": self.correct / seen,
                "images_per_sec": self.seen / max(self.seconds, 1e-9),
                "train_images": self.seen}


def train_one_epoch(state: TrainState, loader: DataLoader, criterion: torch.nn.Module,
                    precision: Precision, context: DistContext, callbacks: Callback,
                    sums: EpochSums, stop_requested: Callable[[], bool]) -> bool:
    """Train until the loader is done or `stop_requested()` (which all ranks must answer
    alike) says stop; returns True if cut short. `sums` is updated in place (local to this
    rank until `reduce_epoch_sums`)."""
    model, optimizer, device = state.model, state.optimizer, context.device
    set_train_mode(model)
    steps_in_epoch = sums.step + len(loader)
    # Carry on from the sums so far (a resumed epoch): the additions then happen in the
    # uninterrupted run's order, and the epoch's train_loss comes out bit-identical.
    loss_sum = torch.tensor(sums.loss_sum, device=device, dtype=torch.float64)
    correct = torch.tensor(sums.correct, device=device, dtype=torch.float64)
    seen, interrupted = 0, False
    # fp16 only: a drop of the loss scale marks a step the scaler skipped (one host sync
    # per step, where the scaler is on at all).
    scaling = precision.scaler.is_enabled()
    scale = precision.scaler.get_scale() if scaling else 1.0
    started = waiting_since = time.perf_counter()
    for images, labels in loader:
        step_started = time.perf_counter()
        images, labels = _to_device(images, labels, device, precision)
        with torch.autocast(device.type, dtype=precision.dtype or torch.float32,
                            enabled=precision.dtype is not None):
            outputs = model(images)
            loss = criterion(outputs, labels)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        skipped = False
        if scaling:
            scale, previous = precision.scaler.get_scale(), scale
            skipped = scale < previous
        with torch.no_grad():
            outputs = outputs.detach().float()
            loss_sum += F.cross_entropy(outputs, labels, reduction="sum").double()
            correct += (outputs.argmax(dim=1) == labels).sum()
        seen += labels.numel()
        sums.step += 1
        state.global_step += 1
        callbacks.on_step_end(state, StepResult(
            epoch=state.epoch, step=sums.step, steps_in_epoch=steps_in_epoch,
            loss=loss.detach(), outputs=outputs, labels=labels, batch_size=labels.numel(),
            data_seconds=step_started - waiting_since,
            compute_seconds=time.perf_counter() - step_started, optimizer_skipped=skipped))
        if sums.step < steps_in_epoch and stop_requested():
            interrupted = True
            break
        waiting_since = time.perf_counter()
    sums.loss_sum = loss_sum.item()
    sums.correct = correct.item()
    sums.seen += seen
    sums.seconds += time.perf_counter() - started
    return interrupted


def reduce_epoch_sums(sums: EpochSums, context: DistContext) -> EpochSums:
    """Totals over all ranks (images/s counts every rank's images in the same wall time)."""
    loss_sum, correct, seen = all_reduce_sum([sums.loss_sum, sums.correct, sums.seen], context)
    return EpochSums(sums.step, loss_sum, correct, seen, sums.seconds)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, precision: Precision,
             context: DistContext, distributed: bool) -> tuple[float, float, int]:
    """(mean cross-entropy, accuracy, images) over the loader, summed over ranks if
    `distributed` (each rank holding a shard)."""
    device = context.device
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    for images, labels in loader:
        images, labels = _to_device(images, labels, device, precision)
        with torch.autocast(device.type, dtype=precision.dtype or torch.float32,
                            enabled=precision.dtype is not None):
            outputs = model(images).float()
        loss_sum += F.cross_entropy(outputs, labels, reduction="sum").double()
        correct += (outputs.argmax(dim=1) == labels).sum()
        seen += labels.numel()
    totals = [loss_sum.item(), correct.item(), float(seen)]
    if distributed:
        totals = all_reduce_sum(totals, context)
    loss_total, correct_total, seen_total = totals
    if seen_total == 0:
        return float("nan"), 0.0, 0
    return loss_total / seen_total, correct_total / seen_total, int(seen_total)


def _to_device(images, labels, device, precision: Precision):
    memory_format = torch.channels_last if precision.channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)
