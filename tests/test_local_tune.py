"""The local tuner: SageMaker's ranges and strategies map onto the intended Optuna parts,
and a study over real child processes (which log like the training program) finds the
better region, prunes, records failures and resumes."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from dogbreed.metrics import format_epoch_line
from launcher import jobs
from launcher.config import Config
from launcher.local_tune import (ObjectiveReader, TrialJob, optuna_parameter, planned_jobs,
                                 pruner_for, run_study, sampler_for, trials_summary)
from launcher.ranges import HyperparameterRange

# A stand-in training job: a real process that logs epoch lines whose valid_accuracy peaks
# at lr = 1e-3 (log scale) and improves per epoch; `fail` makes it exit 1 with a reason.
FAKE_JOB = r"""
import json, math, sys, time
from dogbreed.metrics import format_epoch_line
hps = json.loads(sys.argv[1])
if hps.get("optimizer") == "sgd":  # stands for a job that breaks
    print("ERROR the optimizer broke", flush=True)
    sys.exit(1)
lr, epochs = float(hps["lr"]), int(hps.get("epochs", 3))
peak = math.exp(-(math.log10(lr) + 3) ** 2)
for epoch in range(1, epochs + 1):
    time.sleep(float(hps.get("sleep", 0)))
    value = peak * epoch / epochs
    print(format_epoch_line(epoch, dict(train_loss=1, train_accuracy=value, valid_loss=1 - value,
                                        valid_accuracy=value, images_per_sec=1.0)), flush=True)
"""


def fake_backend(folder: Path) -> TrialJob:
    def start(name, hyperparameters):
        command = [sys.executable, "-c", FAKE_JOB, json.dumps(hyperparameters)]
        return jobs.RunningJob(name, command, os.environ, folder / name / "train.log")

    def outcome(job, code):
        return jobs.JobOutcome(job.name, code, None if code == 0 else "the optimizer broke",
                               "artifact" if code == 0 else None, job.log)
    return TrialJob(start, outcome)


@pytest.fixture(autouse=True)
def ctrl_c_raises_keyboard_interrupt():
    """A shell starts background jobs with SIGINT ignored, and Python keeps it so: then the
    Ctrl-C these tests send would do nothing. Give it Python's usual meaning."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupted_at(backend: TrialJob, call: int) -> TrialJob:
    """The backend, with a Ctrl-C (SIGINT to this process) as its `call`-th job starts."""
    calls = []

    def start(name, hyperparameters):
        calls.append(name)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGINT)
        return backend.start(name, hyperparameters)
    return TrialJob(start, backend.outcome)


def tuning_config(**tuning) -> Config:
    values = {"max_jobs": 4, "max_parallel_jobs": 1,
              "ranges": {"lr": {"type": "continuous", "min": 1e-5, "max": 1e-1,
                                "scaling": "Logarithmic"}}}
    values.update(tuning)
    return Config.model_validate({"tuning": values})


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


def test_grid_runs_every_combination_once_and_resumes_exactly(tmp_path):
    config = tuning_config(strategy="Grid", max_jobs=2, ranges={
        "lr": {"type": "categorical", "values": [0.001, 0.01]},
        "batch-size": {"type": "categorical", "values": [16, 32, 64]}})
    backend = fake_backend(tmp_path)
    from launcher.errors import LauncherError
    with pytest.raises(LauncherError, match="interrupted"):
        run_study(config, tmp_path / "grid", interrupted_at(backend, 3), {"epochs": 1})
    rows = trials_summary(run_study(config, tmp_path / "grid", backend, {"epochs": 1}))
    done = [(row["hyperparameters"]["lr"], row["hyperparameters"]["batch-size"])
            for row in rows if row["status"] == "Completed"]
    assert sorted(done) == sorted((lr, bs) for lr in ("0.001", "0.01")
                                  for bs in ("16", "32", "64"))
    assert [row["status"] for row in rows].count("Interrupted") == 1


def test_the_objective_is_read_with_sagemakers_regex():
    reader = ObjectiveReader("valid_loss")
    line = format_epoch_line(3, dict(train_loss=0.5, train_accuracy=0.8, valid_loss=0.25,
                                     valid_accuracy=0.9, images_per_sec=10.0))
    assert reader.read("algo-1-abcd  | " + line) == (3, 0.25)
    assert reader.read("progress: epoch 4 step 10/20") is None
    assert reader.read("epoch=4 train_loss=nan valid_loss=nan") == (4, pytest.approx(math.nan,
                                                                                     nan_ok=True))
    assert reader.last != reader.last  # the last value read is kept, nan included


def test_bayesian_tuning_finds_the_better_region(tmp_path):
    config = tuning_config(max_jobs=14, max_parallel_jobs=2)
    study = run_study(config, tmp_path / "study", fake_backend(tmp_path), {"epochs": 2}, seed=1)
    rows = trials_summary(study)
    assert len(rows) == 14 and all(row["status"] == "Completed" for row in rows)
    best_lr = float(study.best_trial.user_attrs["hyperparameters"]["lr"])
    # The peak is at 1e-3 over four decades; the best found lies within a third of a decade.
    assert 10 ** -3.35 < best_lr < 10 ** -2.65, best_lr
    assert study.best_value > 0.75
    # The curve of each job, epoch by epoch, as the plot shows it.
    assert [step for step, _ in rows[0]["intermediate"]] == [1, 2]


def test_early_stopping_stops_worse_jobs(tmp_path):
    config = tuning_config(max_jobs=8, early_stopping="Auto", strategy="Random", ranges={
        "lr": {"type": "categorical", "values": [0.001, 0.1]}})
    study = run_study(config, tmp_path / "study", fake_backend(tmp_path),
                      {"epochs": 4, "sleep": 0.05}, seed=0)
    rows = trials_summary(study)
    stopped = [row for row in rows if row["status"] == "Stopped"]
    assert stopped, [(r["hyperparameters"]["lr"], r["status"]) for r in rows]
    for row in stopped:  # the median rule stopped only the worse lr, before its last epoch
        assert row["hyperparameters"]["lr"] == "0.1"
        assert len(row["intermediate"]) < 4
    assert study.best_trial.user_attrs["hyperparameters"]["lr"] == "0.001"


def test_failed_jobs_are_kept_with_their_reason(tmp_path):
    config = tuning_config(strategy="Grid", ranges={
        "optimizer": {"type": "categorical", "values": ["adamw", "sgd"]}})
    study = run_study(config, tmp_path / "study", fake_backend(tmp_path),
                      {"epochs": 2, "lr": 0.001})
    rows = {row["hyperparameters"]["optimizer"]: row for row in trials_summary(study)}
    assert rows["sgd"]["status"] == "Failed"
    assert rows["sgd"]["failure"] == "the optimizer broke"
    assert rows["adamw"]["status"] == "Completed"
    assert rows["adamw"]["objective"] == pytest.approx(1.0)


def test_an_interrupted_study_resumes(tmp_path):
    config = tuning_config(max_jobs=3)
    folder = tmp_path / "study"
    backend = fake_backend(tmp_path)
    from launcher.errors import LauncherError
    with pytest.raises(LauncherError, match="run the same command again to resume"):
        run_study(config, folder, interrupted_at(backend, 2), {"epochs": 2}, seed=0)
    study = run_study(config, folder, backend, {"epochs": 2}, seed=0)
    rows = trials_summary(study)
    assert [row["status"] for row in rows] == ["Completed", "Interrupted", "Completed",
                                               "Completed"]
    # The interrupted job ran again, under its name and with its hyperparameters.
    assert rows[2]["job"] == rows[1]["job"]
    assert rows[2]["hyperparameters"] == rows[1]["hyperparameters"]
    assert rows[3]["job"] == "study-003"
    # More jobs (or another parallelism) extend the same study; another search does not.
    extended = trials_summary(run_study(tuning_config(max_jobs=4), folder, backend,
                                        {"epochs": 2}, seed=0))
    assert [row["status"] for row in extended].count("Completed") == 4
    with pytest.raises(LauncherError, match="holds a study with other settings"):
        run_study(tuning_config(max_jobs=4), folder, backend, {"epochs": 3})
