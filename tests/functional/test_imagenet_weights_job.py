"""`pretrained=imagenet` reads back the weights `python -m dogbreed.imagenet_weights copy`
put in the torch cache (what the training image does at build time). The real file
cannot be downloaded here, so a ResNet50 state_dict written by the test stands in for it."""

from __future__ import annotations

import torch
from torchvision.models import resnet50

from conftest import FAST_HYPERPARAMETERS, channels_of, fill_torch_cache, run_job


def test_copied_weights_are_what_pretrained_imagenet_loads(sample_data, tmp_path):
    source = tmp_path / "weights"
    source.mkdir()
    torch.save(resnet50(weights=None).state_dict(), source / "resnet50-11ad3fa6.pth")
    code, err = fill_torch_cache(tmp_path, "copy", str(source))
    assert code == 0, err
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert cached.is_file()
    job = run_job(tmp_path / "job", dict(FAST_HYPERPARAMETERS, epochs=1, trainable="fc",
                                         pretrained="imagenet"), channels_of(sample_data),
                  TORCH_HOME=str(tmp_path / "torch"))
    assert job.returncode == 0, job.stderr
    assert (tmp_path / "job" / "model" / "model.safetensors").is_file()
