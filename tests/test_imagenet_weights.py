"""Filling the torch cache with ImageNet weights (what the training image does at build
time), and `pretrained=imagenet` reading them back. The real file cannot be downloaded
here, so a ResNet50 state_dict written by the test stands in for it."""

from __future__ import annotations

import subprocess
import sys

import torch
from torchvision.models import resnet50

from conftest import FAST_HYPERPARAMETERS, channels_of, run_job


def _fill_cache(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "dogbreed.imagenet_weights", *args],
                          env={"TORCH_HOME": str(tmp_path / "torch"), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)


def test_copied_weights_are_what_pretrained_imagenet_loads(sample_data, tmp_path):
    source = tmp_path / "weights"
    source.mkdir()
    torch.save(resnet50(weights=None).state_dict(), source / "resnet50-11ad3fa6.pth")
    filled = _fill_cache(tmp_path, "copy", str(source))
    assert filled.returncode == 0, filled.stderr
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert cached.is_file()
    job = run_job(tmp_path / "job", dict(FAST_HYPERPARAMETERS, epochs=1, trainable="fc",
                                         pretrained="imagenet"), channels_of(sample_data),
                  TORCH_HOME=str(tmp_path / "torch"))
    assert job.returncode == 0, job.stderr
    assert (tmp_path / "job" / "model" / "model.safetensors").is_file()


def test_a_file_that_is_not_resnet50_is_refused(tmp_path):
    source = tmp_path / "weights"
    source.mkdir()
    torch.save({"fc.weight": torch.zeros(10, 2048)}, source / "other.pth")
    refused = _fill_cache(tmp_path, "copy", str(source))
    assert refused.returncode == 1
    assert "is not an ImageNet ResNet50 state_dict" in refused.stderr


def test_skip_and_bad_usage(tmp_path):
    assert _fill_cache(tmp_path, "skip").returncode == 0
    assert not (tmp_path / "torch").exists()
    assert _fill_cache(tmp_path, "fetch").returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "expected one .pth file" in _fill_cache(tmp_path, "copy", str(empty)).stderr
