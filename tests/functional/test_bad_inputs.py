"""Every bad input named by the training contract fails the job with exit code != 0 and
one readable line in output/failure (what SageMaker shows as the FailureReason)."""

from __future__ import annotations

import shutil

import torch

from conftest import FAST_HYPERPARAMETERS, channels_of, failure_reason, run_job


def test_a_bad_hyperparameter_fails_the_job_with_its_reason(sample_data, tmp_path):
    """The whole path once: the parser's message becomes the job's one-line failure (each
    message itself is checked in process, `test_the_parser_names_the_bad_hyperparameter`)."""
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, trainable="layer3"),
                     channels_of(sample_data))
    assert result.returncode == 1
    assert "hyperparameter trainable must be one of fc, layer4, all" in failure_reason(tmp_path)
    assert len(failure_reason(tmp_path).splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model" / "model.safetensors").exists()


def test_features_asked_with_a_trainable_backbone_fail_before_training(sample_data, tmp_path):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, **{"data-pipeline": "features"}),
                     channels_of(sample_data))
    assert result.returncode == 1
    assert failure_reason(tmp_path).startswith(
        "data-pipeline=features needs trainable=fc: with trainable=all the backbone changes")
    assert "decoded" not in result.stdout  # refused before any image was decoded
    assert not (tmp_path / "checkpoints" / "checkpoint.pt").exists()


def test_compile_asked_with_a_hooked_debugger_collection_fails_before_training(sample_data,
                                                                              tmp_path):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, compile="on",
                                    **{"debugger-collections": "losses,relu_input"}),
                     channels_of(sample_data))
    assert result.returncode == 1
    assert failure_reason(tmp_path).startswith(
        "compile=on: the debugger collection(s) relu_input hook the model's modules")
    assert "Traceback" not in result.stderr
    assert "decoded" not in result.stdout  # refused before any image was decoded
    assert not (tmp_path / "checkpoints" / "checkpoint.pt").exists()


def test_missing_train_channel(sample_data, tmp_path):
    result = run_job(tmp_path, FAST_HYPERPARAMETERS, channels_of(sample_data, ("valid", "test")))
    assert result.returncode == 1
    assert "missing channel(s) train" in failure_reason(tmp_path)


def test_empty_channel(sample_data, tmp_path):
    empty = tmp_path / "empty_train"
    empty.mkdir()
    channels = dict(channels_of(sample_data), train=empty)
    result = run_job(tmp_path / "job", FAST_HYPERPARAMETERS, channels)
    assert result.returncode == 1
    assert "channel 'train'" in failure_reason(tmp_path / "job")
    assert "is empty" in failure_reason(tmp_path / "job")


def test_class_folder_without_images(sample_data, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(sample_data / "train", train)
    for image in (train / "003.Airedale_terrier").iterdir():
        image.unlink()
    channels = dict(channels_of(sample_data), train=train)
    result = run_job(tmp_path / "job", FAST_HYPERPARAMETERS, channels)
    assert result.returncode == 1
    assert "class folder(s) with no readable image: 003.Airedale_terrier" in \
        failure_reason(tmp_path / "job")


def test_imagenet_weights_absent_from_the_torch_cache(sample_data, tmp_path):
    result = run_job(tmp_path / "job", dict(FAST_HYPERPARAMETERS, pretrained="imagenet"),
                     channels_of(sample_data), TORCH_HOME=str(tmp_path / "empty_torch_home"))
    assert result.returncode == 1
    reason = failure_reason(tmp_path / "job")
    assert "pretrained=imagenet but" in reason and "resnet50-11ad3fa6.pth does not exist" in reason


def test_pretrained_state_dict_of_another_architecture(sample_data, tmp_path):
    weights = tmp_path / "not_resnet50.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, weights)
    result = run_job(tmp_path / "job", dict(FAST_HYPERPARAMETERS, pretrained=str(weights)),
                     channels_of(sample_data))
    assert result.returncode == 1
    assert "is not a ResNet50 state_dict" in failure_reason(tmp_path / "job")


def test_pretrained_state_dict_file_is_used(sample_data, tmp_path):
    """The third `pretrained` form: a ResNet50 state_dict file (here one the test wrote)."""
    from torchvision.models import resnet50
    weights = tmp_path / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), weights)
    result = run_job(tmp_path / "job", dict(FAST_HYPERPARAMETERS, epochs=1, trainable="fc",
                                            pretrained=str(weights)), channels_of(sample_data))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "job" / "model" / "model.safetensors").is_file()
