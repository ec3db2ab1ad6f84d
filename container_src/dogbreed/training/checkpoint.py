"""Checkpoints for spot interruptions: everything needed to carry on where a job stopped.

SageMaker syncs /opt/ml/checkpoints with `checkpoint_s3_uri` and puts it back when a spot
job restarts. A checkpoint holds the model, optimizer, scheduler and scaler states, the
position in the epoch (a SIGTERM can land mid-epoch), the partial epoch sums, the
early-stopping state and metric history, and the RNG states. Files are written to a temp
name and renamed, so a kill during the write never leaves a half file; they are read
with `weights_only=True` (no code unpickled).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"
BEST_WEIGHTS_PATTERN = "best-epoch*.safetensors"
# A checkpoint is only reused by a job with the same settings, apart from these: how
# long it runs and what it observes, not what it learns.
RESUMABLE_CHANGES = ("epochs", "patience", "num-workers", "deterministic", "compile",
                     "debugger", "debugger-collections", "debugger-save-interval", "rules",
                     "rule-parameters", "profiler", "profiler-interval-ms",
                     "profiler-start-step", "profiler-num-steps")


class ResumeError(ValueError):
    """The checkpoint on disk belongs to a different job."""


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        # A job may resume on a host with fewer GPUs than the one that saved it.
        for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def restore_scaler(scaler: torch.amp.GradScaler, saved: dict[str, Any]) -> None:
    """A bf16, fp32 or CPU job saves an empty scaler state; an fp16 job resuming it (the
    same job moved to a GPU without bf16, since amp=auto follows the GPU) starts with a
    fresh scale instead of failing."""
    if saved:
        scaler.load_state_dict(saved)


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
    return path


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ResumeError(f"cannot read checkpoint {path}: {error}; delete it to start "
                          "afresh") from None


def check_compatible(checkpoint: dict[str, Any], hyperparameters: dict[str, Any],
                     class_folders: list[str]) -> None:
    """Resuming another job's checkpoint would silently train the wrong model."""
    if checkpoint["class_folders"] != class_folders:
        raise ResumeError("the checkpoint in checkpoints/ was trained on different classes; "
                          "use a fresh checkpoint location for this job")
    saved, current = checkpoint["hyperparameters"], hyperparameters
    changed = sorted(key for key in set(saved) | set(current)
                     if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key))
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
                            for key in changed)
        raise ResumeError(f"the checkpoint in checkpoints/ is from a job with other "
                          f"hyperparameters ({details}); use a fresh checkpoint location")


def best_weights_name(epoch: int) -> str:
    return f"best-epoch{epoch:04d}.safetensors"


def remove_best_weights(directory: Path, keep: str | None) -> None:
    """Drop best-weight files of superseded epochs (only after a checkpoint names `keep`)."""
    for path in directory.glob(BEST_WEIGHTS_PATTERN):
        if path.name != keep:
            path.unlink()


def _as_tuples(value):
    """torch.save turns nothing into lists, but be strict: random.setstate wants tuples."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(item) for item in value)
    return value
