"""Image preprocessing, described by data so training and serving cannot drift.

`eval_preprocessing(image_size)` returns the plain-dict description that goes into the
model artifact's JSON; `open_for_eval(source, spec)` decodes a photo as every eval path
does, and `eval_transform(spec)` builds the torchvision pipeline that follows from it.
Serving builds its pipeline from the artifact's copy of that dict, never from defaults.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from dogbreed.images import open_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resize to crop / 0.875 before the center crop (256 -> 224), the ImageNet convention.
CROP_FRACTION = 0.875
# Random crops keep at least a quarter of the picture: breeds differ in detail (ears,
# coat), which the ImageNet default of 8 % too often cuts away.
TRAIN_CROP_SCALE = (0.25, 1.0)
# A JPEG much larger than the model needs decodes at 1/2, 1/4 or 1/8 scale (DCT scaling,
# several times faster), but never below this many times the eval resize, so the resize
# that follows still shrinks it at least 2x. Every eval path decodes this way (validation
# and test in the job, and serving): a reduced-scale decode is not the pixels of a full
# one, and on a small, barely trained model it flipped answers 0.06 apart, so the job's
# test_accuracy and an endpoint's could differ.
DECODE_MARGIN = 2


def eval_preprocessing(image_size: int) -> dict[str, Any]:
    """The eval transform as data: what serving must do to a photo before the model."""
    return {
        "resize": int(round(image_size / CROP_FRACTION)),
        "center_crop": image_size,
        "interpolation": "bilinear",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "color_mode": "RGB",
    }


def eval_decode_size(spec: dict[str, Any]) -> tuple[int, int]:
    """The least size a JPEG decodes to on the eval paths (see DECODE_MARGIN)."""
    side = DECODE_MARGIN * spec["resize"]
    return side, side


def open_for_eval(source, spec: dict[str, Any]) -> Image.Image:
    """A photo decoded as every eval path decodes it, before `eval_transform`/`eval_crop`."""
    return open_rgb(source, draft_size=eval_decode_size(spec))


def eval_transform(spec: dict[str, Any]) -> T.Compose:
    """Resize the short side, center crop, normalise: exactly what `spec` says."""
    return T.Compose([
        T.Resize(spec["resize"], interpolation=_interpolation(spec["interpolation"]),
                 antialias=True),
        T.CenterCrop(spec["center_crop"]),
        T.ToTensor(),
        T.Normalize(spec["mean"], spec["std"]),
    ])


def eval_crop(image: Image.Image, spec: dict[str, Any]) -> Image.Image:
    """The eval transform's PIL steps alone (resize, center crop): what a batch path stacks
    as uint8 before `to_model_input` does the rest on the device."""
    image = TF.resize(image, spec["resize"], interpolation=_interpolation(spec["interpolation"]),
                      antialias=True)
    return TF.center_crop(image, spec["center_crop"])


def to_model_input(pixels: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
    """(N, 3, H, W) pixel values 0..255 (uint8 or float) -> normalised float32, with
    exactly ToTensor's and Normalize's operations, in their order: the values equal the
    eval transform's bit for bit, on whatever device `pixels` is."""
    mean = torch.as_tensor(spec["mean"], dtype=torch.float32, device=pixels.device)
    std = torch.as_tensor(spec["std"], dtype=torch.float32, device=pixels.device)
    return pixels.to(torch.float32).div(255).sub_(mean.view(1, -1, 1, 1)) \
        .div_(std.view(1, -1, 1, 1))


def train_transform(spec: dict[str, Any]) -> T.Compose:
    """Augmentation for training, ending in the same size and normalisation as `spec`."""
    return T.Compose([
        T.RandomResizedCrop(spec["center_crop"], scale=TRAIN_CROP_SCALE,
                            interpolation=_interpolation(spec["interpolation"]), antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(spec["mean"], spec["std"]),
    ])


def _interpolation(name: str) -> T.InterpolationMode:
    return T.InterpolationMode(name)
