"""The cached data pipeline in process: the store's eval records give exactly the PIL eval
transform's values, device augmentation crops and flips per sample as asked and
reproducibly, a resumed epoch gets the same batches, and a store that fits nowhere is a
clear error (data-pipeline=cached) or the PIL loader with a warning (auto)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from dogbreed.hyperparameters import parse_hyperparameters
from dogbreed.training import image_store
from dogbreed.training.data import ChannelError, EpochSampler, scan_channel
from dogbreed.training.device_batches import DeviceBatches, augment, random_crop_boxes
from dogbreed.training.distributed import DistContext
from dogbreed.training.image_store import StoreDoesNotFit, choose_location, prepare_stores
from dogbreed.training.run import image_stores
from dogbreed.transforms import (TRAIN_CROP_SCALE, eval_preprocessing, eval_transform,
                                 open_for_eval)

CPU = DistContext(0, 0, 1, torch.device("cpu"))


@pytest.fixture
def varied_channel(sample_data, tmp_path) -> Path:
    """Sample data plus what photos are: EXIF-rotated, grayscale, PNG with alpha, large."""
    root = tmp_path / "valid"
    folder = root / "001.Affenpinscher"
    folder.mkdir(parents=True)
    source = next((sample_data / "train").rglob("*.jpg"))
    photo = Image.open(source).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    photo.save(folder / "rotated.jpg", exif=exif.tobytes())
    photo.convert("L").save(folder / "gray.jpg")
    photo.convert("RGBA").save(folder / "alpha.png")
    photo.resize((1600, 1200)).save(folder / "large.jpg", quality=90)
    Image.new("RGB", (90, 300), (10, 200, 30)).save(folder / "tall.jpg")
    for index, image in enumerate(sorted((sample_data / "valid").rglob("*.jpg"))[:6]):
        (folder / f"sample{index}.jpg").write_bytes(image.read_bytes())
    return root


def test_eval_records_give_the_pil_eval_transform_s_values_exactly(varied_channel):
    """Serving sees the pixels validation saw: same preprocessing, bit for bit (CPU)."""
    channel = scan_channel("valid", varied_channel)
    preprocessing = eval_preprocessing(96)
    stores = prepare_stores({"valid": channel}, preprocessing, CPU, num_cpus=2, log=print)
    batches = DeviceBatches(stores["valid"], [label for _, label in channel.samples],
                            EpochSampler(len(channel.samples), shuffle=False), 4,
                            preprocessing, torch.device("cpu"), train=False)
    cached = torch.cat([images for images, _ in batches])
    reference = torch.stack([eval_transform(preprocessing)(open_for_eval(path, preprocessing))
                             for path, _ in channel.samples])
    assert len(channel.samples) == 11 and cached.shape == reference.shape
    assert torch.equal(cached, reference)


def test_the_store_files_are_gone_once_mapped(sample_data, tmp_path, monkeypatch):
    monkeypatch.setenv(image_store.SCRATCH_ENV, str(tmp_path))
    monkeypatch.setattr(image_store, "SHARED_MEMORY", tmp_path / "no-shm")
    channel = scan_channel("train", sample_data / "train")
    stores = prepare_stores({"train": channel}, eval_preprocessing(64), CPU, num_cpus=2,
                            log=print)
    assert stores["train"].shape == (len(channel.samples), 73, 73, 3)
    assert stores["train"].float().std() > 10  # decoded pixels, not the zeros of the file
    assert list(tmp_path.iterdir()) == []  # unlinked: a killed job leaves nothing


def records(count: int, side: int = 40) -> torch.Tensor:
    """Records whose pixel value says where it was: x in red, y in green."""
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    image = torch.stack([x * 255 // (side - 1), y * 255 // (side - 1),
                         torch.full_like(x, 128)], dim=-1).to(torch.uint8)
    return image.expand(count, side, side, 3).contiguous()


def test_crop_boxes_follow_random_resized_crop_s_rule():
    boxes = random_crop_boxes(4000, 73, torch.Generator().manual_seed(0))
    left, top, right, bottom = boxes.unbind(1)
    width, height = right - left, bottom - top
    assert (left >= 0).all() and (top >= 0).all() and (right <= 73).all() and (bottom <= 73).all()
    area = width * height / 73 ** 2
    assert area.min() >= TRAIN_CROP_SCALE[0] - 0.02 and area.max() <= 1.0
    aspect = width / height
    assert aspect.min() >= 0.75 - 0.05 and aspect.max() <= 4 / 3 + 0.05
    assert len(set(map(tuple, boxes.tolist()))) > 3500  # per sample, not one per batch
    # The same distribution as torchvision's own draw on a PIL image of that size.
    torch.manual_seed(0)
    reference = torch.tensor([RandomResizedCrop.get_params(
        Image.new("RGB", (73, 73)), list(TRAIN_CROP_SCALE), [3 / 4, 4 / 3])[2:]
        for _ in range(4000)], dtype=torch.float32)  # (height, width)
    ours = torch.stack([height, width], dim=1)
    assert torch.allclose(ours.mean(0), reference.mean(0), atol=1.0)
    assert torch.allclose(ours.std(0), reference.std(0), atol=1.0)


def test_device_augmentation_is_per_sample_reproducible_and_in_range():
    preprocessing = eval_preprocessing(32)
    batch = records(256)
    first = augment(batch, preprocessing, seed=7)
    assert first.shape == (256, 3, 32, 32) and first.dtype == torch.float32
    assert not torch.equal(first[0], first[1])  # each sample its own crop
    assert torch.equal(first, augment(batch, preprocessing, seed=7))  # same seed, same batch
    assert not torch.equal(first, augment(batch, preprocessing, seed=8))
    mean = torch.tensor(preprocessing["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing["std"]).view(1, 3, 1, 1)
    pixels = first * std + mean  # back to 0..1
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    # Red grows with x: left to right unless flipped. Flips at the rate asked (1/2).
    red = pixels[:, 0]
    flipped = (red[:, :, 0].mean(1) > red[:, :, -1].mean(1)).float()
    count = flipped.sum().item()
    assert abs(count - 128) <= 4 * math.sqrt(256 * 0.25), count


def test_a_resumed_epoch_gets_the_batches_the_uninterrupted_one_got():
    preprocessing = eval_preprocessing(32)
    store = records(50)
    labels = list(range(50))

    def epoch(start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sampler = EpochSampler(50, shuffle=True, seed=3)
        sampler.set_epoch(2, start=start)
        return list(DeviceBatches(store, labels, sampler, 8, preprocessing,
                                  torch.device("cpu"), train=True))

    whole, resumed = epoch(0), epoch(3 * 8)
    assert len(whole) == 7 and len(resumed) == 4
    for (images, labels_), (again, labels_again) in zip(whole[3:], resumed):
        assert torch.equal(labels_, labels_again) and torch.equal(images, again)


def test_a_store_that_fits_nowhere_is_refused_or_falls_back(sample_data, monkeypatch, capsys):
    channels = {"train": scan_channel("train", sample_data / "train")}

    def full(total_bytes: int, *args, **kwargs):
        raise StoreDoesNotFit(f"the decoded images need {total_bytes} bytes: no room")
    monkeypatch.setattr(image_store, "choose_location", full)
    cached = parse_hyperparameters({"data-pipeline": "cached"})
    with pytest.raises(StoreDoesNotFit, match="data-pipeline=cached: the decoded images need"):
        image_stores(cached, channels, eval_preprocessing(64), CPU, num_cpus=2)
    auto = parse_hyperparameters({})
    assert image_stores(auto, channels, eval_preprocessing(64), CPU, num_cpus=2) is None
    assert "WARNING data-pipeline=auto falls back to the PIL loader: the decoded images need" \
        in capsys.readouterr().out
    assert image_stores(parse_hyperparameters({"data-pipeline": "pil"}), channels,
                        eval_preprocessing(64), CPU, num_cpus=2) is None


def test_the_store_goes_to_memory_when_it_fits_there_else_to_scratch(tmp_path, monkeypatch):
    shm, scratch = tmp_path / "shm", tmp_path / "scratch"
    shm.mkdir()
    scratch.mkdir()
    free = {shm: 2 * 2**30, scratch: 10 * 2**30}
    monkeypatch.setattr(image_store, "_free_bytes", lambda folder: free.get(folder, 0))
    assert choose_location(2**30, scratch, shared_memory=shm) == shm
    assert choose_location(3 * 2**30, scratch, shared_memory=shm) == scratch
    with pytest.raises(StoreDoesNotFit, match=r"need 12\.00 GiB .* set DOGBREED_SCRATCH_DIR"):
        choose_location(12 * 2**30, scratch, shared_memory=shm)


def test_a_large_jpeg_decodes_in_draft_mode_to_the_record_size(tmp_path):
    """A 12 MP photo for a 73-pixel record: DCT scaling, then the resize."""
    path = tmp_path / "big.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 100, 50)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue())
    spec = image_store.store_spec("train", eval_preprocessing(64), 1)
    record = image_store.decode_record(str(path), spec, eval_preprocessing(64))
    assert record.shape == (73, 73, 3)
    assert abs(int(record[..., 0].mean()) - 200) <= 3


def test_a_build_that_fails_names_the_channel_and_leaves_no_file(sample_data, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv(image_store.SCRATCH_ENV, str(tmp_path))
    monkeypatch.setattr(image_store, "SHARED_MEMORY", tmp_path / "no-shm")

    def truncated(*args, **kwargs):
        raise OSError("image file is truncated (7 bytes not processed)")
    monkeypatch.setattr(image_store, "build_store", truncated)
    channel = scan_channel("train", sample_data / "train")
    with pytest.raises(ChannelError, match="channel 'train': an image that passed the "
                       "readability check cannot be decoded: image file is truncated"):
        prepare_stores({"train": channel}, eval_preprocessing(64), CPU, num_cpus=2, log=print)
    assert list(tmp_path.iterdir()) == []
