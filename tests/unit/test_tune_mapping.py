"""The local tuner's mapping: SageMaker's ranges, strategies and objective regex onto the
intended Optuna parts. Studies over real child processes are in
functional/test_local_tune.py."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from conftest import tuning_config
from dogbreed.metrics import format_epoch_line
from launcher.local_tune import (ObjectiveReader, optuna_parameter, planned_jobs, pruner_for,
                                 sampler_for)
from launcher.ranges import HyperparameterRange


@pytest.mark.parametrize("spec, kind, low, high, log", [
    (dict(type="continuous", min=0.1, max=0.9, scaling="Linear"), FloatDistribution, 0.1, 0.9,
     False),
    (dict(type="continuous", min=1e-4, max=1e-1, scaling="Logarithmic"), FloatDistribution,
     1e-4, 1e-1, True),
    (dict(type="continuous", min=1e-4, max=1e-1, scaling="Auto"), FloatDistribution, 1e-4, 1e-1,
     True),  # spans 1000x
    (dict(type="continuous", min=0.1, max=0.5, scaling="Auto"), FloatDistribution, 0.1, 0.5,
     False),
    (dict(type="integer", min=2, max=64, scaling="Linear"), IntDistribution, 2, 64, False),
    (dict(type="integer", min=2, max=512, scaling="Logarithmic"), IntDistribution, 2, 512, True),
])
def test_numeric_ranges_map_to_distributions(spec, kind, low, high, log):
    parameter = optuna_parameter("x", HyperparameterRange(**spec))
    assert type(parameter.distribution) is kind
    assert (parameter.distribution.low, parameter.distribution.high) == \
        (pytest.approx(low), pytest.approx(high))
    assert parameter.distribution.log is log
    assert parameter.name == "x"


def test_reverse_logarithmic_searches_the_distance_from_one():
    parameter = optuna_parameter("momentum", HyperparameterRange(
        type="continuous", min=0.9, max=0.999, scaling="ReverseLogarithmic"))
    assert parameter.name == "1-momentum"
    assert parameter.distribution.log is True
    assert parameter.distribution.low == pytest.approx(0.001)
    assert parameter.distribution.high == pytest.approx(0.1)
    assert parameter.to_value(0.01) == pytest.approx(0.99)


def test_categorical_ranges_map_to_choices():
    parameter = optuna_parameter("optimizer", HyperparameterRange(
        type="categorical", values=["adamw", "sgd"]))
    assert isinstance(parameter.distribution, CategoricalDistribution)
    assert parameter.distribution.choices == ("adamw", "sgd")


def test_strategies_map_to_samplers_and_pruners():
    config = tuning_config()
    assert isinstance(sampler_for(config.tuning), optuna.samplers.TPESampler)
    random = tuning_config(strategy="Random").tuning
    assert isinstance(sampler_for(random), optuna.samplers.RandomSampler)
    assert isinstance(pruner_for(random, 10), optuna.pruners.NopPruner)
    grid = tuning_config(strategy="Grid", ranges={
        "batch-size": {"type": "categorical", "values": [16, 32]},
        "optimizer": {"type": "categorical", "values": ["adamw", "sgd", "adam"]}}).tuning
    assert planned_jobs(grid) == 6  # every combination, whatever max_jobs says
    hyperband = tuning_config(strategy="Hyperband", hyperband_min_resource=2).tuning
    assert isinstance(sampler_for(hyperband), optuna.samplers.RandomSampler)
    pruner = pruner_for(hyperband, 9)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource) == (2, 9)
    assert isinstance(pruner_for(tuning_config(early_stopping="Auto").tuning, 10),
                      optuna.pruners.MedianPruner)


def test_the_objective_is_read_with_sagemakers_regex():
    reader = ObjectiveReader("valid_loss")
    line = format_epoch_line(3, dict(train_loss=0.5, train_accuracy=0.8, valid_loss=0.25,
                                     valid_accuracy=0.9, images_per_sec=10.0))
    assert reader.read("algo-1-abcd  | " + line) == (3, 0.25)
    assert reader.read("progress: epoch 4 step 10/20") is None
    assert reader.read("epoch=4 train_loss=nan valid_loss=nan") == (4, pytest.approx(math.nan,
                                                                                     nan_ok=True))
    assert reader.last != reader.last  # the last value read is kept, nan included
