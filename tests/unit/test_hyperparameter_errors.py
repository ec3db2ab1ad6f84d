"""Every bad hyperparameter is refused by the parser with one line that names the key
(in process; functional/test_bad_inputs.py checks once that the message becomes the
job's output/failure)."""

from __future__ import annotations

import pytest

from conftest import FAST_HYPERPARAMETERS
from dogbreed.hyperparameters import HyperparameterError, parse_hyperparameters


@pytest.mark.parametrize("change, reason", [
    ({"learning-rate": "0.1"}, "unknown hyperparameter(s) learning-rate"),
    ({"lr": "fast"}, "hyperparameter lr must be a number, got 'fast'"),
    ({"epochs": "0"}, "hyperparameter epochs must be between 1 and 1000, got 0"),
    ({"batch-size": "2.5"}, "hyperparameter batch-size must be a whole number"),
    ({"trainable": "layer3"}, "hyperparameter trainable must be one of fc, layer4, all"),
])
def test_the_parser_names_the_bad_hyperparameter(change, reason):
    with pytest.raises(HyperparameterError) as error:
        parse_hyperparameters({key: str(value) for key, value in
                               dict(FAST_HYPERPARAMETERS, **change).items()})
    assert reason in str(error.value) and len(str(error.value).splitlines()) == 1


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
