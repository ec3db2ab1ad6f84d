"""Every bad input named by the training contract fails the job with exit code != 0 and
one readable line in output/failure (what SageMaker shows as the FailureReason)."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import FAST_HYPERPARAMETERS, channels_of, failure_reason, run_job
from dogbreed.hyperparameters import HyperparameterError, parse_hyperparameters


@pytest.mark.parametrize("change, reason", [
    ({"learning-rate": "0.1"}, "unknown hyperparameter(s) learning-rate"),
    ({"lr": "fast"}, "hyperparameter lr must be a number, got 'fast'"),
    ({"epochs": "0"}, "hyperparameter epochs must be between 1 and 1000, got 0"),
    ({"batch-size": "2.5"}, "hyperparameter batch-size must be a whole number"),
    ({"trainable": "layer3"}, "hyperparameter trainable must be one of fc, layer4, all"),
])
def test_bad_hyperparameter_fails_the_job_with_its_reason(sample_data, tmp_path, change, reason):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, **change), channels_of(sample_data))
    assert result.returncode == 1
    assert reason in failure_reason(tmp_path)
    assert len(failure_reason(tmp_path).splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model" / "model.safetensors").exists()


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


def test_sagemaker_added_hyperparameters_are_ignored():
    parsed = parse_hyperparameters({"_tuning_objective_metric": "valid_loss",
                                    "sagemaker_region": "eu-west-1", "lr": 0.01, "epochs": "4",
                                    "amp": "false", "num-workers": "2"})
    assert (parsed.lr, parsed.epochs, parsed.amp, parsed.num_workers) == (0.01, 4, "off", "2")


@pytest.mark.parametrize("raw, message", [
    ({"lr": 0}, "lr must be > 0"),
    ({"lr": "nan"}, "lr must be finite"),
    ({"weight-decay": -1}, "weight-decay must be between 0 and 1"),
    ({"label-smoothing": 1}, "label-smoothing must be between 0 and 0.99"),
    ({"num-workers": "many"}, "num-workers must be a number"),
    ({"amp": "fp8"}, "amp must be one of auto, bf16, fp16, off"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of adamw, adam, sgd"),
    ({"pretrained": ""}, "pretrained must not be empty"),
    ({"epochs": True}, "epochs must be a number"),
    ({"deterministic": "always"}, "deterministic must be one of on, off"),
])
def test_hyperparameter_validation_names_the_key(raw, message):
    with pytest.raises(HyperparameterError, match=message):
        parse_hyperparameters(raw)


@pytest.mark.parametrize("change, reason", [
    ({"profiler": "maybe"}, "hyperparameter profiler must be one of on, off"),
    ({"profiler-interval-ms": "10"}, "profiler-interval-ms must be between 50 and 60000"),
    ({"profiler-num-steps": "-1"}, "profiler-num-steps must be between 0 and 1000"),
    ({"profiler-start-step": "soon"}, "profiler-start-step must be a number"),
])
def test_bad_profiler_settings_are_refused_with_their_reason(change, reason):
    with pytest.raises(HyperparameterError, match=reason):
        parse_hyperparameters(change)
    assert parse_hyperparameters({"profiler": "false"}).profiler == "off"
