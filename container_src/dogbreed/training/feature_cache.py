"""Frozen-backbone feature cache: with `trainable=fc`, the backbone runs once per image.

When only the head trains, every epoch ran the same frozen ResNet50 forward pass again
over the same images: 99.9% of a step's work for a result the epoch before had computed
already. Here the backbone's penultimate features (2,048 numbers per image, after the
average pool) are computed once per job from the image store, and the epochs train and
evaluate the head alone on them (milliseconds per epoch instead of a forward pass over the
data set):

- train: one view per image, the un-augmented one: the eval crop (the central
  `center_crop` square of the `resize` record), with no random crop and no flip. The head
  then trains without augmentation; benchmarks/README.md says what that costs in accuracy.
- valid and test: the eval records, so their metrics equal the full model's on the same
  pixels (the frozen BatchNorm layers stay in eval mode during training too:
  `model.set_train_mode`).

The features are computed in the autocast precision the loop uses and kept as float32 on
the device (27 MB per 3,300 images). Under DDP each rank computes a share and an
all-reduce gives every rank all of them; the test features are computed by rank 0 alone,
which alone evaluates the test set.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import torch
from torch import nn

from dogbreed.training.data import EpochSampler
from dogbreed.training.device_batches import DeviceBatches, batch_count
from dogbreed.training.distributed import DistContext, all_reduce_tensor_sum
from dogbreed.training.loop import Precision


class FeatureHead(nn.Module):
    """The model's head alone, under the model's own names (`fc.weight`), fed features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.fc = model.fc

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def backbone_of(model: nn.Module) -> nn.Sequential:
    """ResNet50 up to its head (conv1 ... avgpool, flattened), sharing the model's layers."""
    children = dict(model.named_children())
    return nn.Sequential(*(module for name, module in children.items() if name != "fc"),
                         nn.Flatten(1))


def eval_view(records: torch.Tensor, center_crop: int) -> torch.Tensor:
    """The eval crop of (N, side, side, 3) train records: a view, nothing copied (offsets
    rounded as torchvision's center_crop rounds them)."""
    side = records.shape[1]
    offset = int(round((side - center_crop) / 2.0))
    return records[:, offset:offset + center_crop, offset:offset + center_crop, :]


@torch.no_grad()
def compute_features(model: nn.Module, records: torch.Tensor, preprocessing: dict,
                     batch_size: int, precision: Precision, context: DistContext,
                     log: Callable[[str], None] = print) -> torch.Tensor:
    """(N, 2048) float32 features of the N eval-sized records, on `context.device`: this
    rank computes every world_size-th one, an all-reduce sums the disjoint shares."""
    count = records.shape[0]
    sampler = EpochSampler(count, shuffle=False, rank=context.rank,
                           world_size=context.world_size)
    batches = DeviceBatches(records, [0] * count, sampler, batch_size, preprocessing,
                            context.device, train=False, channels_last=precision.channels_last)
    backbone = backbone_of(model).eval()  # the loop sets the modes it trains in itself
    # Zeros where other ranks' shares go: the all-reduce sums disjoint rows.
    features = torch.zeros(count, model.fc.in_features, device=context.device)
    mine = torch.tensor(list(iter(sampler)), dtype=torch.int64, device=context.device)
    started = time.perf_counter()
    for (images, _), rows in zip(batches, torch.split(mine, batch_size)):
        with torch.autocast(context.device.type, dtype=precision.dtype or torch.float32,
                            enabled=precision.dtype is not None):
            features.index_copy_(0, rows, backbone(images).float())
    features = all_reduce_tensor_sum(features, context)
    seconds = time.perf_counter() - started
    log(f"features of {count} images computed once in {seconds:.1f} s "
        f"({mine.numel() / max(seconds, 1e-9):.0f} images/s on this rank)")
    return features


class FeatureBatches:
    """What the loop takes from a loader (`len`, iteration, `.sampler`), over features
    already on the device: the batches of the sampler's order, as the image loaders give."""

    def __init__(self, features: torch.Tensor, labels: list[int], sampler: EpochSampler,
                 batch_size: int, drop_last: bool = False):
        self.features = features
        self.labels = torch.tensor(labels, dtype=torch.int64, device=features.device)
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __len__(self) -> int:
        return batch_count(len(self.sampler), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = torch.tensor(list(iter(self.sampler)), dtype=torch.int64,
                               device=self.features.device)
        for chunk in list(torch.split(indices, self.batch_size))[:len(self)]:
            yield self.features.index_select(0, chunk), self.labels.index_select(0, chunk)
