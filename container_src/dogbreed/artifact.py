"""The model artifact (`model/`, shipped as model.tar.gz): weights plus one JSON.

`model.safetensors` loads without unpickling anything; `model.json` is everything serving
needs (architecture, class names in index order, preprocessing, hyperparameters, final
metrics, library versions), so serving never carries a second copy of any of it.
`metrics.json` is the small per-epoch record people and tools read without the weights.
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import load_file, save_file

from dogbreed import __version__

WEIGHTS_FILE = "model.safetensors"
MODEL_JSON = "model.json"
METRICS_JSON = "metrics.json"
FORMAT_VERSION = 1


def write_artifact(model_dir: Path, *, state_dict: dict[str, torch.Tensor], architecture: str,
                   class_folders: list[str], class_names: list[str],
                   preprocessing: dict[str, Any], hyperparameters: dict[str, Any],
                   metrics: dict[str, Any], history: list[dict[str, float]],
                   training: dict[str, Any]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model_dir / WEIGHTS_FILE, state_dict)
    description = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "weights_file": WEIGHTS_FILE,
        "num_classes": len(class_names),
        "class_names": class_names,
        "class_folders": class_folders,
        "preprocessing": preprocessing,
        "hyperparameters": hyperparameters,
        "metrics": metrics,
        "training": training,
        "versions": {
            "dogbreed": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(model_dir / MODEL_JSON, description)
    _write_json(model_dir / METRICS_JSON, {"final": metrics, "epochs": history})


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """safetensors needs contiguous, unshared tensors (channels_last ones are not)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().to("cpu").contiguous().clone()
               for key, value in state_dict.items()}
    temporary = path.with_suffix(".tmp")
    save_file(tensors, str(temporary))
    os.replace(temporary, path)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def read_model_json(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / MODEL_JSON).read_text())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(_strict_json(data), indent=2, allow_nan=False) + "\n")


def _strict_json(value: Any) -> Any:
    """NaN/inf (a diverged epoch) become null: strict JSON parsers reject NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value
