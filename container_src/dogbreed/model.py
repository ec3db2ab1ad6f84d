"""ResNet50 with a new N-way head: build it, load its starting weights, choose what trains.

Training jobs run under network isolation, so ImageNet weights come only from the local
torch cache that the training image fills at build time; nothing is downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

ARCHITECTURE = "resnet50"
IMAGENET_WEIGHTS = ResNet50_Weights.IMAGENET1K_V2
# Pretrained layers that are unfrozen learn at this fraction of the head's lr, so the
# new random head cannot wreck the features it is being trained on.
BACKBONE_LR_FACTOR = 0.1
_TRAINABLE_PREFIXES = {"fc": ("fc.",), "layer4": ("layer4.", "fc."), "all": ("",)}


class PretrainedWeightsError(ValueError):
    """Starting weights that cannot be found or do not fit ResNet50."""


def build_model(num_classes: int, pretrained: str, trainable: str) -> nn.Module:
    """ResNet50 with `pretrained` weights, a fresh `num_classes` head, `trainable` unfrozen."""
    model = resnet50(weights=None)
    if pretrained != "none":
        _load_backbone(model, pretrained)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    # Explicit head init: small weights, zero bias, so initial predictions are near uniform.
    nn.init.normal_(model.fc.weight, std=0.01)
    nn.init.zeros_(model.fc.bias)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(_TRAINABLE_PREFIXES[trainable])
    return model


def parameter_groups(model: nn.Module, lr: float, weight_decay: float,
                     pretrained: str) -> list[dict]:
    """Head at `lr`; unfrozen pretrained layers at lr * BACKBONE_LR_FACTOR; no decay on
    biases and norms (decaying BatchNorm scales only hurts)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_head = name.startswith("fc.")
        decays = parameter.ndim > 1
        groups.setdefault((is_head, decays), []).append(parameter)
    backbone_lr = lr if pretrained == "none" else lr * BACKBONE_LR_FACTOR
    return [{"params": params, "lr": lr if is_head else backbone_lr,
             "weight_decay": weight_decay if decays else 0.0}
            for (is_head, decays), params in sorted(groups.items())]


def set_train_mode(model: nn.Module) -> None:
    """Train mode, but BatchNorm layers with frozen weights keep their running statistics
    (a frozen backbone then computes exactly the features it was pretrained to)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def imagenet_weights_path() -> Path:
    """Where torchvision keeps the ImageNet file; the training image fills it at build time."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


def _load_backbone(model: nn.Module, pretrained: str) -> None:
    if pretrained == "imagenet":
        path = imagenet_weights_path()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"pretrained=imagenet but {path} does not exist: the training image fetches "
                "it at build time (see docker/); build the image with the weights, or use "
                "pretrained=none or pretrained=<path to a ResNet50 state_dict>")
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise PretrainedWeightsError(f"pretrained weights file {path} does not exist")
    state = _read_state_dict(path)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("fc.")]
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"{path} is not a ResNet50 state_dict: {len(missing)} missing key(s) "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """safetensors, or a torch state_dict read without unpickling code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PretrainedWeightsError(f"cannot read weights from {path}: {error}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path} does not hold a state_dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}
