"""`python -m dogbreed.imagenet_weights` refuses what is not ImageNet's ResNet50, and its
usage errors (in process; functional/test_imagenet_weights_job.py trains on the weights)."""

from __future__ import annotations

import torch

from conftest import fill_torch_cache


def test_a_file_that_is_not_resnet50_is_refused(tmp_path):
    source = tmp_path / "weights"
    source.mkdir()
    torch.save({"fc.weight": torch.zeros(10, 2048)}, source / "other.pth")
    code, err = fill_torch_cache(tmp_path, "copy", str(source))
    assert code == 1
    assert "is not an ImageNet ResNet50 state_dict" in err


def test_skip_and_bad_usage(tmp_path):
    assert fill_torch_cache(tmp_path, "skip")[0] == 0
    assert not (tmp_path / "torch").exists()
    assert fill_torch_cache(tmp_path, "fetch")[0] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = fill_torch_cache(tmp_path, "copy", str(empty))
    assert code == 1 and "expected one .pth file in" in err
