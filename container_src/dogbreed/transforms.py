"""Image preprocessing, described by data so training and serving cannot drift.

`eval_preprocessing(image_size)` returns the plain-dict description that goes into the
model artifact's JSON; `eval_transform(spec)` builds the torchvision pipeline from it.
Serving builds its pipeline from the artifact's copy of that dict, never from defaults.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resize to crop / 0.875 before the center crop (256 -> 224), the ImageNet convention.
CROP_FRACTION = 0.875
# Random crops keep at least a quarter of the picture: breeds differ in detail (ears,
# coat), which the ImageNet default of 8 % too often cuts away.
TRAIN_CROP_SCALE = (0.25, 1.0)


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
