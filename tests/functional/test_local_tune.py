"""The local tuner over real child processes (which log like the training program): it
finds the better region, prunes, records failures and resumes. The mapping onto Optuna
is in unit/test_tune_mapping.py."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import tuning_config
from launcher import jobs
from launcher.local_tune import TrialJob, run_study, trials_summary

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
