"""Decode once per job: a channel's images as uint8 pixels in one contiguous store.

The PIL loader decodes, resizes and crops every JPEG again in every epoch, in Python, one
image at a time; on a GPU host it delivers ~2,000-2,500 images/s, a fraction of what the
GPU trains. Here each image is decoded once, in parallel over the host's cores, into a
file of fixed-size uint8 records, and the loader (`device_batches`) only gathers rows:

- `train` records are squares of side `resize` (the eval resize, `image_size / 0.875`):
  the short side resized to it, the long side center-cropped (what lies beyond the
  central square is not seen by the random crops; see the README for the trade-off).
  JPEGs much larger than that decode in draft mode (DCT scaling) first.
- `eval` records are exactly the artifact's eval preprocessing up to its uint8 crop: the
  eval decode (`transforms.open_for_eval`: reduced scale only down to twice the resize),
  resize of the short side, center crop (`transforms.eval_transform` on the same PIL
  calls), so validation and test see the pixels serving sees.

Where the store lives: /dev/shm (memory) when it fits there with room to spare, else a
memory-mapped file in the scratch folder (DOGBREED_SCRATCH_DIR, default the system's
temporary folder), whose pages the OS keeps in memory as far as they fit. A store that
fits in neither is `StoreDoesNotFit`: the job falls back to the PIL loader
(`data-pipeline=auto`) or fails before training (`data-pipeline=cached`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dogbreed.images import open_rgb
from dogbreed.transforms import eval_crop, open_for_eval

SCRATCH_ENV = "DOGBREED_SCRATCH_DIR"
SHARED_MEMORY = Path("/dev/shm")
# Leave this much of a location free beyond the store (other processes, the checkpoint).
HEADROOM_BYTES = 512 * 2**20


class StoreDoesNotFit(RuntimeError):
    """No location has room for the store; the message says how much was needed where."""


@dataclass(frozen=True)
class StoreSpec:
    """What one record is: `kind` train (side x side square) or eval (the eval crop)."""
    kind: str
    side: int
    count: int

    @property
    def record_bytes(self) -> int:
        return self.side * self.side * 3

    @property
    def total_bytes(self) -> int:
        return self.count * self.record_bytes


def store_spec(kind: str, preprocessing: dict, count: int) -> StoreSpec:
    side = preprocessing["resize"] if kind == "train" else preprocessing["center_crop"]
    return StoreSpec(kind, side, count)


def choose_location(total_bytes: int, scratch: Path | None = None,
                    shared_memory: Path = SHARED_MEMORY) -> Path:
    """The folder the store goes in: memory (/dev/shm) when it fits there, else scratch."""
    needed = total_bytes + HEADROOM_BYTES
    if shared_memory.is_dir() and _free_bytes(shared_memory) >= needed:
        return shared_memory
    scratch = Path(scratch or os.environ.get(SCRATCH_ENV) or tempfile.gettempdir())
    if _free_bytes(scratch) >= needed:
        return scratch
    raise StoreDoesNotFit(
        f"the decoded images need {total_bytes / 2**30:.2f} GiB (+{HEADROOM_BYTES >> 20} MiB "
        f"headroom): {shared_memory} has {_free_bytes(shared_memory) / 2**30:.2f} GiB free, "
        f"{scratch} {_free_bytes(scratch) / 2**30:.2f} GiB; set {SCRATCH_ENV} to a folder "
        "with room, or use data-pipeline=pil")


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def decode_record(path: str, spec: StoreSpec, preprocessing: dict) -> np.ndarray:
    """One image as its (side, side, 3) uint8 record."""
    if spec.kind == "eval":  # exactly the eval path's PIL steps
        image = eval_crop(open_for_eval(path, preprocessing), preprocessing)
    else:
        image = open_rgb(path, draft_size=(spec.side, spec.side))
        width, height = image.size
        scale = spec.side / min(width, height)
        size = (max(spec.side, round(width * scale)), max(spec.side, round(height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - spec.side) // 2, (size[1] - spec.side) // 2
        image = image.crop((left, top, left + spec.side, top + spec.side))
    return np.asarray(image, dtype=np.uint8)


def build_store(path: Path, samples: list[tuple[str, int]], spec: StoreSpec,
                preprocessing: dict, part: int = 0, parts: int = 1,
                threads: int | None = None) -> None:
    """Decode records part, part + parts, ... of `samples` into the file at `path` (of the
    store's size): several processes on a host each fill their share."""
    records = np.memmap(path, dtype=np.uint8, mode="r+",
                        shape=(spec.count, spec.side, spec.side, 3))
    indices = range(part, spec.count, parts)

    def fill(index: int) -> None:
        records[index] = decode_record(samples[index][0], spec, preprocessing)

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        list(pool.map(fill, indices))  # PIL decodes and resizes without the GIL
    records.flush()


def open_store(path: Path, spec: StoreSpec) -> torch.Tensor:
    """The store as a (count, side, side, 3) uint8 tensor over the mapped file (no copy;
    copy-on-write, so nothing this process does changes the file the others read)."""
    records = np.memmap(path, dtype=np.uint8, mode="c",
                        shape=(spec.count, spec.side, spec.side, 3))
    return torch.from_numpy(records)


def prepare_stores(channels: dict, preprocessing: dict, context, num_cpus: int,
                   log=print) -> dict[str, torch.Tensor]:
    """Every channel's store, decoded by the ranks of each host together (local rank r
    decodes records r, r + n, ...) into files in one folder, mapped by every rank, then
    unlinked: the mappings stay valid, and a killed job leaves no file behind.
    StoreDoesNotFit when rank 0 finds no room (all ranks raise it)."""
    from dogbreed.training.data import ChannelError
    from dogbreed.training.distributed import all_reduce_sum, broadcast_from_main
    specs = {name: store_spec("train" if name == "train" else "eval", preprocessing,
                              len(channel.samples)) for name, channel in channels.items()}
    decision = None
    if context.is_main:
        try:
            folder = choose_location(sum(spec.total_bytes for spec in specs.values()))
            decision = (str(folder), None, secrets.token_hex(6))
        except StoreDoesNotFit as error:
            decision = (None, str(error), None)
    folder, error, token = broadcast_from_main(decision, context)
    if error:
        raise StoreDoesNotFit(error)
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    # Named per host (its first rank): hosts simulated on one machine share /dev/shm.
    host = context.rank - context.local_rank
    paths = {name: Path(folder) / f"dogbreed-{token}-host{host}-{name}.u8" for name in specs}
    try:  # whatever fails from here on, the host's first rank removes the files
        if context.local_rank == 0:
            for name, spec in specs.items():
                with open(paths[name], "xb") as handle:
                    handle.truncate(spec.total_bytes)
        all_reduce_sum([0.0], context)  # the files exist on every host
        for name, spec in specs.items():
            started = time.perf_counter()
            try:
                build_store(paths[name], channels[name].samples, spec, preprocessing,
                            part=context.local_rank, parts=local_size,
                            threads=max(1, num_cpus // local_size))
            except (OSError, ValueError, SyntaxError) as failed:  # PIL's decoding errors
                raise ChannelError(f"channel {name!r}: an image that passed the readability "
                                   f"check cannot be decoded: {failed}") from None
            seconds = time.perf_counter() - started
            log(f"decoded {spec.count} images of channel {name} once, in {seconds:.1f} s "
                f"({spec.count / max(seconds, 1e-9):.0f} images/s, "
                f"{spec.total_bytes / 2**20:.0f} MiB in {folder})")
        all_reduce_sum([0.0], context)  # every part written
        stores = {name: open_store(paths[name], spec) for name, spec in specs.items()}
        all_reduce_sum([0.0], context)  # every rank holds its mappings
    finally:
        if context.local_rank == 0:
            for path in paths.values():
                path.unlink(missing_ok=True)
    return stores
