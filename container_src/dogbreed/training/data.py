"""Image-folder channels: find the images, drop the unreadable ones, feed the loader.

A channel is a tree `NNN.Breed_Name/*.jpg|png`; class index = sorted folder order,
label = folder name without the number, underscores as spaces. Real scraped data carries
truncated JPEGs and non-images; they are found once, up front, by a cheap reduced-size
decode (JPEG draft mode still reads every byte, so truncation shows), then skipped and
counted instead of crashing a worker an hour into training.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from dogbreed.images import is_readable_image, open_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_FOLDER_NUMBER = re.compile(r"^\d+\.")


class ChannelError(ValueError):
    """A data channel the job cannot train on; the message says which and why."""


@dataclass
class Channel:
    name: str
    root: Path
    class_folders: list[str]
    samples: list[tuple[str, int]]
    skipped: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return [label_from_folder(folder) for folder in self.class_folders]


def label_from_folder(folder: str) -> str:
    """`001.Affenpinscher` -> `Affenpinscher`; `037.Brittany_spaniel` -> `Brittany spaniel`."""
    return _FOLDER_NUMBER.sub("", folder).replace("_", " ")


def scan_channel(name: str, root: str | Path,
                 class_folders: list[str] | None = None) -> Channel:
    """List the channel's readable images; `class_folders` pins the index order (from train).

    Raises ChannelError for a missing or empty channel, a class folder without a readable
    image, or (for valid/test) a class that the training channel does not have.
    """
    root = Path(root)
    if not root.is_dir():
        raise ChannelError(f"channel {name!r} not found at {root}")
    folders = sorted(entry.name for entry in root.iterdir()
                     if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise ChannelError(f"channel {name!r} at {root} is empty: expected class folders "
                           "like 001.Affenpinscher/ holding .jpg or .png images")
    if class_folders is None:
        class_folders = folders
    extra = [folder for folder in folders if folder not in class_folders]
    if extra:
        raise ChannelError(f"channel {name!r} has class folder(s) the train channel does not "
                           f"have: {', '.join(extra[:5])}")
    index = {folder: i for i, folder in enumerate(class_folders)}

    candidates: list[tuple[str, int]] = []
    skipped: list[str] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                candidates.append((str(path), index[folder]))
            else:
                skipped.append(str(path))
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        readable = list(pool.map(is_readable_image, (path for path, _ in candidates)))
    samples = [sample for sample, ok in zip(candidates, readable) if ok]
    skipped += [path for (path, _), ok in zip(candidates, readable) if not ok]

    present = {label for _, label in samples}
    empty = [folder for folder in folders if index[folder] not in present]
    if empty:
        raise ChannelError(f"channel {name!r}: class folder(s) with no readable image: "
                           f"{', '.join(empty[:5])}")
    return Channel(name, root, list(class_folders), samples, sorted(skipped))


class ImageListDataset(Dataset):
    """(path, label) pairs -> (transformed tensor, label).

    Keyed by an index, or by (index, augmentation seed) as EpochSampler gives them with
    `seeded=True`: the random crop and flip of a sample then depend on that seed alone,
    not on which loader worker drew it or on what that worker drew before. So a job
    resumed mid-epoch augments its remaining images exactly as the uninterrupted job.
    """

    def __init__(self, samples: list[tuple[str, int]], transform: Callable,
                 decode_size: tuple[int, int] | None = None):
        self.samples = samples
        self.transform = transform
        self.decode_size = decode_size  # eval: `transforms.eval_decode_size`; train: None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        image = open_rgb(path, draft_size=self.decode_size)
        if seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
            torch.manual_seed(seed)
            return self.transform(image), label


class EpochSampler(Sampler[int]):
    """A shuffled (or ordered) epoch, sharded across ranks, that can start mid-epoch.

    The permutation depends only on (seed, epoch), so a job resumed from a mid-epoch
    checkpoint sees the same remaining batches that the interrupted one would have.
    Ranks take interleaved slices; shuffled epochs are padded so all ranks take the
    same number of steps (DDP needs that), evaluation is not padded (exact metrics).
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, seeded: bool = False):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.seeded = seeded  # yield (index, augmentation seed) pairs (ImageListDataset)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use epoch `epoch`'s order, skipping this rank's first `start` indices."""
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))[self.rank::self.world_size]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        per_rank = -(-self.size // self.world_size)
        order += order[: per_rank * self.world_size - self.size]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        indices = self._indices()[self.start:]
        if not self.seeded:
            return iter(indices)
        return iter([(index, self.augmentation_seed(index)) for index in indices])

    def augmentation_seed(self, index: int) -> int:
        """A function of (job seed, epoch, image) only: the same crop on every run."""
        return ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2**63

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.start)
