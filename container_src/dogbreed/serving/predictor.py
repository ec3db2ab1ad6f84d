"""The trained model as serving sees it: load an artifact, answer top-k breeds.

Everything comes from the artifact (`model.json` + `model.safetensors`): the class names,
the head size, the preprocessing. A broken artifact fails here with a reason that says
what to fix, before any server starts.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torchvision.models import resnet50

from dogbreed.artifact import FORMAT_VERSION, MODEL_JSON
from dogbreed.model import ARCHITECTURE
from dogbreed.transforms import eval_crop, eval_decode_size, to_model_input

DEFAULT_TOP_K = 5
PRECISIONS = ("auto", "fp32", "bf16")


class ModelLoadError(ValueError):
    """An artifact that cannot be served; the message says which file and why."""


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on a GPU that computes it natively (half the memory traffic, tensor
    cores), float32 elsewhere (CPUs without AMX run bf16 slower than float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        native = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


@dataclass
class BreedClassifier:
    """The model in channels_last (faster on CPUs too: 26-34 against 38-40 ms per image at
    batch 4 on 2 cores, benchmarks/README.md) at `dtype`; images are cropped on the CPU
    in PIL, exactly as the eval transform does, and normalised as one tensor where the
    model runs."""
    model: torch.nn.Module
    class_names: list[str]
    description: dict[str, Any]
    device: torch.device
    dtype: torch.dtype = torch.float32
    # decoding and resizing release the GIL: the images of a batch use all of the
    # worker's cores
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max(1, torch.get_num_threads()), thread_name_prefix="decode"))
    # The most images one forward pass takes (`warm_up` sets the worker's batch size): a
    # batch of requests with many JSON instances each runs in several passes.
    max_batch: int = 256

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device = "cpu",
             precision: str = "auto") -> "BreedClassifier":
        model_dir = Path(model_dir)
        description = _read_description(model_dir)
        class_names = description["class_names"]
        weights_path = model_dir / description.get("weights_file", "model.safetensors")
        if not weights_path.is_file():
            raise ModelLoadError(f"{weights_path} is missing: the artifact has model.json but "
                                 "no weights")
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelLoadError(f"{weights_path} is not a readable safetensors file: "
                                 f"{error}") from None
        head = state.get("fc.weight")
        if head is None or head.shape[0] != len(class_names):
            rows = "no fc.weight" if head is None else f"{head.shape[0]} outputs"
            raise ModelLoadError(f"{MODEL_JSON} lists {len(class_names)} classes but the "
                                 f"weights' head has {rows}")
        model = resnet50(weights=None, num_classes=len(class_names))
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ModelLoadError(f"{weights_path} does not fit ResNet50: "
                                 f"{str(error).splitlines()[0]}") from None
        device = torch.device(device)
        dtype = resolve_precision(precision, device)
        model = model.to(device, dtype, memory_format=torch.channels_last).eval()
        return cls(model, class_names, description, device, dtype)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.description["preprocessing"]

    def map(self, function: Callable, items: Iterable) -> list:
        """`function` over `items` on the worker's threads, in order."""
        items = list(items)
        if len(items) < 2:
            return [function(item) for item in items]
        return list(self.pool.map(function, items))

    @property
    def decode_size(self) -> tuple[int, int]:
        """What a photo must still measure after a reduced-scale JPEG decode: the size the
        job's validation and test decoded to (`transforms.eval_decode_size`)."""
        return eval_decode_size(self.preprocessing)

    def warm_up(self, batch_size: int = 1) -> list[int]:
        """Run every batch shape a request may meet before the first request does: on a GPU
        each size from 1 to `batch_size` (each new shape costs kernel selection and memory
        on its first run); on a CPU 1 and `batch_size` (each image costs a real forward
        pass there, and the sizes in between reuse the same kernels)."""
        self.max_batch = batch_size
        sizes = range(1, batch_size + 1) if self.device.type == "cuda" else {1, batch_size}
        size = self.preprocessing["resize"]
        for count in sorted(sizes):
            self.predict([Image.new("RGB", (size, size))] * count, top_k=1)
        return sorted(sizes)

    def crop(self, image: Image.Image) -> np.ndarray:
        """The eval transform's PIL steps: the (side, side, 3) uint8 pixels the model sees.
        A request keeps only these, not its decoded photos, until its batch runs."""
        return np.asarray(eval_crop(image, self.preprocessing), dtype=np.uint8)

    def predict(self, images: list[Image.Image], top_k: int = DEFAULT_TOP_K
                ) -> list[list[dict[str, Any]]]:
        """One list of the `top_k` most likely breeds per image, most likely first."""
        return self.predict_crops(self.map(self.crop, images), top_k)

    def predict_crops(self, crops: list[np.ndarray], top_k: int = DEFAULT_TOP_K
                      ) -> list[list[dict[str, Any]]]:
        """`predict` on `crop`s, in forward passes of at most `max_batch` images."""
        return [row for start in range(0, len(crops), self.max_batch)
                for row in self._forward(crops[start:start + self.max_batch], top_k)]

    @torch.inference_mode()
    def _forward(self, crops: list[np.ndarray], top_k: int) -> list[list[dict[str, Any]]]:
        pixels = torch.from_numpy(np.stack(crops)).to(self.device, non_blocking=True)
        # NHWC viewed as NCHW is already channels_last: no copy before the model
        batch = to_model_input(pixels.permute(0, 3, 1, 2), self.preprocessing).to(self.dtype)
        probabilities = torch.softmax(self.model(batch).float(), dim=1)
        values, indices = probabilities.topk(min(top_k, len(self.class_names)), dim=1)
        # One device-to-host copy for the whole batch (float32 holds class ids exactly),
        # not two per row: on a GPU each copy is a synchronisation.
        values, indices = torch.stack((values, indices.float())).cpu().tolist()
        return [[{"label": self.class_names[int(index)], "class_id": int(index),
                  "probability": round(value, 6)}
                 for value, index in zip(row_values, row_indices)]
                for row_values, row_indices in zip(values, indices)]


def _read_description(model_dir: Path) -> dict[str, Any]:
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    path = model_dir / MODEL_JSON
    if not path.is_file():
        present = ", ".join(sorted(p.name for p in model_dir.iterdir())[:8]) or "nothing"
        raise ModelLoadError(f"{path} is missing (the directory holds: {present}); is this a "
                             "model.tar.gz written by the dogbreed training program?")
    try:
        description = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(description, dict):
        raise ModelLoadError(f"{path} does not describe a model (not a JSON object)")
    if description.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{path} has format_version {description.get('format_version')!r};"
                             f" this server reads version {FORMAT_VERSION}")
    if description.get("architecture") != ARCHITECTURE:
        raise ModelLoadError(f"{path} describes a {description.get('architecture')!r} model; "
                             f"this server serves {ARCHITECTURE}")
    missing = [key for key in ("class_names", "preprocessing") if key not in description]
    if missing:
        raise ModelLoadError(f"{path} lacks {', '.join(missing)}")
    return description


def main(argv: list[str] | None = None) -> int:
    """`python -m dogbreed.serving.predictor MODEL_DIR`: load the artifact once, as serving will, and
    print a JSON summary (or the reason it cannot load, or that the host's GPUs are
    unusable, exit 1). `serve` runs this in a
    child process so that the front process itself never holds torch or the weights."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dogbreed.serving.predictor MODEL_DIR", file=sys.stderr)
        return 2
    from dogbreed.gpu_check import GpuUnusable, require_usable_gpus
    try:
        require_usable_gpus()
    except GpuUnusable as error:
        print(json.dumps({"error": str(error), "gpu_unusable": True}))
        return 1
    try:
        classifier = BreedClassifier.load(args[0])
    except ModelLoadError as error:
        print(json.dumps({"error": str(error)}))
        return 1
    print(json.dumps({"classes": len(classifier.class_names),
                      "image_size": classifier.description["preprocessing"]["center_crop"],
                      "gpus": torch.cuda.device_count()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
