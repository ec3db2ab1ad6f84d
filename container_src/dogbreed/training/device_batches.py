"""Batches from the uint8 image store, augmented where the model runs.

A step gathers its rows from the store (one `index_select`, in a background thread that
keeps the next batches ready, pinned for an asynchronous copy on GPUs), moves them to the
device, and there turns the whole batch into the model's input at once:

- training: a random resized crop per sample (torchvision's RandomResizedCrop rule:
  scale `TRAIN_CROP_SCALE` of the area, aspect 3/4..4/3, ten tries then the center) and
  the resize to `image_size` in one `roi_align` (bilinear, averaging ~one sample per
  source pixel, so a downscale is antialiased), a horizontal flip for half the samples,
  normalisation. The randomness of a batch depends on (seed, epoch, rank, batch number)
  only: a job resumed mid-epoch augments its remaining batches as the uninterrupted one.
- evaluation: the records already are the eval crop; only `ToTensor` and `Normalize`'s
  arithmetic, in their order, so the values equal the PIL path's bit for bit.

No Python runs per image in the steady state.
"""

from __future__ import annotations

import math
import queue
import threading
from typing import Iterator

import torch
from torchvision.ops import roi_align

from dogbreed.training.data import EpochSampler
from dogbreed.transforms import TRAIN_CROP_SCALE, to_model_input

TRAIN_CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10
PREFETCH_BATCHES = 2


def random_crop_boxes(count: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 4) boxes x1, y1, x2, y2 in pixels of a side x side record, one per sample,
    drawn as torchvision's RandomResizedCrop draws them (on the CPU: a few numbers)."""
    area = side * side
    targets = area * torch.empty(count, CROP_TRIES).uniform_(*TRAIN_CROP_SCALE,
                                                             generator=generator)
    log_ratio = torch.empty(count, CROP_TRIES).uniform_(
        math.log(TRAIN_CROP_RATIO[0]), math.log(TRAIN_CROP_RATIO[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    widths = torch.sqrt(targets * aspect).round()
    heights = torch.sqrt(targets / aspect).round()
    fits = (widths > 0) & (widths <= side) & (heights > 0) & (heights <= side)
    first = fits.to(torch.int64).argmax(dim=1)
    rows = torch.arange(count)
    width = torch.where(fits.any(dim=1), widths[rows, first], torch.tensor(float(side)))
    height = torch.where(fits.any(dim=1), heights[rows, first], torch.tensor(float(side)))
    # torchvision: top = randint(0, side - h + 1), left = randint(0, side - w + 1).
    top = (torch.rand(count, generator=generator) * (side - height + 1)).floor()
    left = (torch.rand(count, generator=generator) * (side - width + 1)).floor()
    return torch.stack([left, top, left + width, top + height], dim=1)


def augment(records: torch.Tensor, preprocessing: dict, seed: int) -> torch.Tensor:
    """(N, side, side, 3) uint8 records on the device -> (N, 3, size, size) training input."""
    generator = torch.Generator().manual_seed(seed)
    count, side = records.shape[0], records.shape[1]
    size = preprocessing["center_crop"]
    boxes = random_crop_boxes(count, side, generator)
    flips = torch.rand(count, generator=generator) < 0.5
    rois = torch.cat([torch.arange(count, dtype=torch.float32)[:, None], boxes], dim=1)
    pixels = records.permute(0, 3, 1, 2).to(torch.float32)
    crops = roi_align(pixels, rois.to(records.device), output_size=(size, size),
                      spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    flips = flips.to(records.device).view(-1, 1, 1, 1)
    crops = torch.where(flips, crops.flip(-1), crops)
    return to_model_input(crops, preprocessing)


def batch_count(samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch, as a DataLoader counts them."""
    return samples // batch_size if drop_last else -(-samples // batch_size)


class DeviceBatches:
    """What a DataLoader gives the loop (`len`, iteration, `.sampler`), from the store."""

    def __init__(self, records: torch.Tensor, labels: list[int], sampler: EpochSampler,
                 batch_size: int, preprocessing: dict, device: torch.device, train: bool,
                 channels_last: bool = False, drop_last: bool = False):
        self.records, self.labels = records, torch.tensor(labels, dtype=torch.int64)
        self.sampler, self.batch_size = sampler, batch_size
        self.preprocessing, self.device, self.train = preprocessing, device, train
        self.channels_last, self.drop_last = channels_last, drop_last

    def __len__(self) -> int:
        return batch_count(len(self.sampler), self.batch_size, self.drop_last)

    def batch_seed(self, number: int) -> int:
        """The augmentation seed of this epoch's batch `number` on this rank."""
        s = self.sampler
        return (((s.seed * 1_000_003 + s.epoch) * 1_009 + s.rank) * 10_000_019 + number) % 2**63

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = torch.tensor(list(iter(self.sampler)), dtype=torch.int64)
        chunks = list(torch.split(indices, self.batch_size))[:len(self)]
        first = self.sampler.start // self.batch_size
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for number, (records, labels) in enumerate(self._gathered(chunks), start=first):
            records = records.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.train:
                images = augment(records, self.preprocessing, self.batch_seed(number))
            else:
                images = to_model_input(records.permute(0, 3, 1, 2), self.preprocessing)
            yield images.contiguous(memory_format=memory_format), labels

    def _gathered(self, chunks: list[torch.Tensor]):
        """The chunks' rows, gathered (and pinned) in a thread a few batches ahead."""
        ready: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
        stop = threading.Event()
        pin = self.device.type == "cuda"

        def offer(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def gather() -> None:
            for chunk in chunks:
                rows = self.records.index_select(0, chunk)
                if not offer((rows.pin_memory() if pin else rows,
                              self.labels.index_select(0, chunk))):
                    return
            offer(None)

        thread = threading.Thread(target=gather, name="store-gather", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                yield item
        finally:  # the loop may stop early (SIGTERM, a rule): end the thread too
            stop.set()
            thread.join()
