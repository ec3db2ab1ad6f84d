"""Hyperparameter tuning for the `process` and `local` backends, with Optuna.

SageMaker local mode has no tuner, so the same tuning section (ranges, strategy, early
stopping, max jobs, parallel jobs, objective) is mapped onto Optuna:

| SageMaker                        | Optuna                                              |
|----------------------------------|-----------------------------------------------------|
| continuous, Linear               | FloatDistribution(min, max)                         |
| continuous, Logarithmic          | FloatDistribution(min, max, log=True)               |
| continuous, ReverseLogarithmic   | 1 - x with x from FloatDistribution(1-max, 1-min, log=True) |
| integer, Linear / Logarithmic    | IntDistribution(min, max, log=...)                  |
| categorical                      | CategoricalDistribution(values)                     |
| Auto scaling                     | Logarithmic if the range spans >= 100x above 0, else Linear |
| Bayesian                         | TPESampler (constant liar for parallel jobs)        |
| Random                           | RandomSampler                                       |
| Grid (categorical ranges only)   | every combination queued once, in order (max jobs = grid size) |
| Hyperband                        | RandomSampler + HyperbandPruner(min, max resource = epochs) |
| early stopping Auto              | MedianPruner (stop a job whose objective at an epoch is worse than the median of earlier jobs there) |

Each trial is a training job on the chosen backend. Its log is read line by line: the
objective at each epoch (found with the same metric-definition regex SageMaker uses) is
reported to Optuna, a pruned job is stopped with SIGTERM, and the job's objective is the
last value it logged, as on SageMaker. The study lives in a journal file, so running the
same `tune` again after an interruption resumes it: finished trials are kept and a trial
that was cut off runs again (a `process` job even resumes from its checkpoint).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.trial import TrialState

from dogbreed.metrics import METRIC_DEFINITIONS
from launcher.config import Config, TuningSection
from launcher.errors import LauncherError
from launcher.ranges import HyperparameterRange

STUDY_FILE = "study.journal"
SETTINGS_FILE = "tuning.json"


# ---- the mapping ------------------------------------------------------------------------

@dataclass(frozen=True)
class OptunaParameter:
    """How one SageMaker range is searched: Optuna's name and distribution, and the way back."""
    name: str
    distribution: BaseDistribution
    to_value: Callable[[Any], Any]


def optuna_parameter(name: str, spec: HyperparameterRange) -> OptunaParameter:
    if spec.type == "categorical":
        return OptunaParameter(name, CategoricalDistribution(list(spec.values)), lambda v: v)
    scaling = spec.effective_scaling()
    if spec.type == "integer":
        return OptunaParameter(name, IntDistribution(int(spec.min), int(spec.max),
                                                     log=scaling == "Logarithmic"), int)
    if scaling == "ReverseLogarithmic":
        # Dense near 1 (momentum, betas): log-uniform in the distance from 1.
        return OptunaParameter(f"1-{name}", FloatDistribution(1 - spec.max, 1 - spec.min,
                                                              log=True), lambda v: 1 - v)
    return OptunaParameter(name, FloatDistribution(spec.min, spec.max,
                                                   log=scaling == "Logarithmic"), float)


def suggest(trial: optuna.Trial, parameter: OptunaParameter) -> Any:
    found = parameter.distribution
    if isinstance(found, CategoricalDistribution):
        value = trial.suggest_categorical(parameter.name, found.choices)
    elif isinstance(found, IntDistribution):
        value = trial.suggest_int(parameter.name, found.low, found.high, log=found.log)
    else:
        value = trial.suggest_float(parameter.name, found.low, found.high, log=found.log)
    return parameter.to_value(value)


def sampler_for(tuning: TuningSection, seed: int | None = None) -> optuna.samplers.BaseSampler:
    if tuning.strategy == "Bayesian":
        # constant_liar: jobs running side by side count as poor results meanwhile, so
        # parallel jobs are not sent to the same spot.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=min(
            10, max(2, tuning.max_jobs // 3)))
    # Random; Hyperband's sampling; and Grid, whose every combination is queued up front
    # (so a resumed grid re-runs exactly the interrupted combinations).
    return optuna.samplers.RandomSampler(seed=seed)


def pruner_for(tuning: TuningSection, epochs: int) -> optuna.pruners.BasePruner:
    if tuning.strategy == "Hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=tuning.hyperband_min_resource or 1,
            max_resource=tuning.hyperband_max_resource or epochs)
    if tuning.early_stopping == "Auto":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def grid_space(tuning: TuningSection) -> dict[str, list[Any]]:
    return {name: list(spec.values) for name, spec in tuning.ranges.items()}


def planned_jobs(tuning: TuningSection) -> int:
    """Grid runs every combination once (as SageMaker computes it); others `max_jobs`."""
    if tuning.strategy == "Grid":
        return math.prod(len(values) for values in grid_space(tuning).values())
    return tuning.max_jobs


# ---- reading a job's log ----------------------------------------------------------------

class ObjectiveReader:
    """Finds (epoch, value) of the objective in log lines with SageMaker's regexes."""

    def __init__(self, objective: str):
        regexes = {d["Name"]: re.compile(d["Regex"]) for d in METRIC_DEFINITIONS}
        self._objective = regexes[objective]
        self._epoch = regexes["epoch"]
        self.last: float | None = None
        self.history: list[tuple[int | None, float]] = []

    def read(self, line: str) -> tuple[int | None, float] | None:
        found = self._objective.search(line)
        if not found:
            return None
        epoch = self._epoch.search(line)
        point = (int(float(epoch.group(1))) if epoch else None, float(found.group(1)))
        self.last = point[1]
        self.history.append(point)
        return point


# ---- the tuner --------------------------------------------------------------------------

class TrialFailed(RuntimeError):
    """A training job that failed, or never logged the objective (Optuna: FAIL)."""


class TrialInterrupted(RuntimeError):
    """A job stopped because the tune was interrupted (FAIL with no reason: runs again)."""


@dataclass
class TrialJob:
    """What the tuner needs from a backend: start a job, read it, stop it, its outcome."""
    start: Callable[[str, dict[str, Any]], Any]  # (name, hyperparameters) -> RunningJob
    outcome: Callable[[Any, int], Any]           # (job, exit code) -> JobOutcome


def run_study(config: Config, study_dir: Path, backend_job: TrialJob,
              static_hyperparameters: dict[str, Any], seed: int | None = None,
              fresh: bool = False) -> optuna.Study:
    """Create or resume the study in study_dir and run trials until the plan is done.

    Trials are asked for one at a time under a lock and run on our own threads, so a seed
    gives the same order of hyperparameters and Ctrl-C can stop every running job (each
    checkpoints) before the study is left for the next run to resume.
    """
    tuning = config.tuning
    study_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(study_dir):
        study = _open_study(tuning, study_dir, static_hyperparameters, seed, fresh)
        # A job cut off by an interruption does not count against max jobs: it runs again.
        finished = [t for t in study.trials if t.state.is_finished() and not _interrupted(t)]
        remaining = planned_jobs(tuning) - len(finished)
        if finished:
            print(f"resuming {study_dir}: {len(finished)} job(s) done, {max(remaining, 0)} "
                  "to go", flush=True)
        if remaining > 0:
            _Runner(study, study_dir, backend_job, static_hyperparameters, tuning).run(remaining)
        return study


@contextlib.contextmanager
def _exclusive(study_dir: Path):
    """One tune per study at a time: two would run the same jobs in the same folders."""
    with open(study_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LauncherError(f"another tune is running on {study_dir}: wait for it, or "
                                "stop it (Ctrl-C) first") from None
        yield


def _open_study(tuning: TuningSection, study_dir: Path, static: dict[str, Any],
                seed: int | None, fresh: bool) -> optuna.Study:
    # How many jobs and how many at a time may change between runs; what is searched may not.
    settings = {"tuning": tuning.model_dump(mode="json", exclude={"max_jobs",
                                                                  "max_parallel_jobs"}),
                "static": static}
    settings = json.loads(json.dumps(settings))
    settings_file = study_dir / SETTINGS_FILE
    if fresh:
        (study_dir / STUDY_FILE).unlink(missing_ok=True)
    elif settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise LauncherError(f"{study_dir} holds a study with other settings: pass --fresh to "
                            "start over there, or --name for a new study")
    settings_file.write_text(json.dumps(settings, indent=2) + "\n")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / STUDY_FILE)))
    # Our own lines say what each trial did; Optuna would repeat failures as tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    epochs = int(static.get("epochs", 10))
    study = optuna.create_study(study_name=study_dir.name, storage=storage,
                                load_if_exists=True, sampler=sampler_for(tuning, seed),
                                pruner=pruner_for(tuning, epochs),
                                direction=tuning.direction.lower())
    if tuning.strategy == "Grid" and not study.trials:
        for values in itertools.product(*grid_space(tuning).values()):
            study.enqueue_trial(dict(zip(tuning.ranges, values)))
    _requeue_interrupted(study, storage)
    return study


class _Runner:
    """Up to max_parallel_jobs trials at a time, each on its own thread."""

    def __init__(self, study: optuna.Study, study_dir: Path, backend_job: TrialJob,
                 static: dict[str, Any], tuning: TuningSection):
        self.study, self.study_dir, self.backend_job = study, study_dir, backend_job
        self.static, self.tuning = static, tuning
        self.parameters = {name: optuna_parameter(name, spec)
                           for name, spec in tuning.ranges.items()}
        self.printer = _Printer(tuning.objective)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.running: set = set()
        self.to_start = 0
        self.errors: list[BaseException] = []

    def run(self, count: int) -> None:
        self.to_start = count
        workers = min(count, self.tuning.max_parallel_jobs)
        done = [threading.Event() for _ in range(workers)]
        for finished in done:
            threading.Thread(target=self._work, args=(finished,), daemon=True).start()
        # Waiting on events, not Thread.join: a Ctrl-C that lands inside join() can make
        # later joins return at once on Python 3.11, leaving jobs running behind our back.
        try:
            while not all(finished.wait(0.2) for finished in done):
                pass
        except KeyboardInterrupt:
            self.stopping.set()
            with self.lock:
                jobs = list(self.running)
            print(f"\ninterrupted: stopping {len(jobs)} running job(s) (each saves a "
                  "checkpoint) ...", flush=True)
            for job in jobs:
                job.stop()
            for finished in done:
                while not finished.wait(0.2):
                    pass
            raise LauncherError(f"tuning interrupted: run the same command again to resume "
                                f"(the study is in {self.study_dir})") from None
        if self.errors:
            raise self.errors[0]

    def _work(self, finished: threading.Event) -> None:
        try:
            self._run_trials()
        finally:
            finished.set()

    def _run_trials(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                if self.to_start <= 0:
                    return
                self.to_start -= 1
                trial = self.study.ask()
                values = {name: suggest(trial, parameter)
                          for name, parameter in self.parameters.items()}
            hyperparameters = dict(self.static, **values)
            name = trial.user_attrs.get("job") or f"{self.study_dir.name}-{trial.number:03d}"
            trial.set_user_attr("job", name)
            trial.set_user_attr("hyperparameters",
                                {k: str(v) for k, v in hyperparameters.items()})
            try:
                value = _run_trial(trial, self, name, hyperparameters)
            except optuna.TrialPruned:
                self.study.tell(trial, state=TrialState.PRUNED)
            except (TrialFailed, TrialInterrupted):
                self.study.tell(trial, state=TrialState.FAIL)
            except BaseException as error:  # a launcher bug: stop everything, say it
                trial.set_user_attr("failure", f"the launcher failed: {error!r}")
                self.study.tell(trial, state=TrialState.FAIL)
                self.errors.append(error)
                self.stopping.set()
                return
            else:
                self.study.tell(trial, value)

    def started(self, job) -> None:
        with self.lock:
            self.running.add(job)
        if self.stopping.is_set():
            job.stop()

    def ended(self, job) -> None:
        with self.lock:
            self.running.discard(job)


def _requeue_interrupted(study: optuna.Study, storage) -> None:
    """Jobs cut off by an interrupted tune (Ctrl-C, or the machine went away) run again,
    under the same name and hyperparameters, once each."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # Left RUNNING by a tune that was killed: Optuna has no public "abandon" call.
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        job = trial.user_attrs.get("job")
        if not _interrupted(trial) or job is None:
            continue
        if any(later.number > trial.number and later.user_attrs.get("job") == job
               for later in trials):
            continue  # queued again already
        study.enqueue_trial(trial.params, user_attrs={"job": job}, skip_if_exists=False)


def _interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and "failure" not in trial.user_attrs


def _run_trial(trial: optuna.Trial, runner: _Runner, name: str,
               hyperparameters: dict[str, Any]) -> float:
    tuning, printer = runner.tuning, runner.printer
    reader = ObjectiveReader(tuning.objective)
    started = time.monotonic()
    printer.started(trial.number, name, hyperparameters, tuning)
    job = runner.backend_job.start(name, hyperparameters)
    runner.started(job)
    trial.set_user_attr("log", str(job.log))
    pruned_at = None
    try:
        for line in job.lines():
            point = reader.read(line)
            if point is None or point[0] is None or pruned_at is not None:
                continue
            if math.isfinite(point[1]):
                trial.report(point[1], step=point[0])
            if not math.isfinite(point[1]) or trial.should_prune():
                pruned_at = point[0]
                job.stop()
        code = job.wait()
    finally:
        runner.ended(job)
    outcome = runner.backend_job.outcome(job, code)
    seconds = time.monotonic() - started
    trial.set_user_attr("seconds", round(seconds, 1))
    trial.set_user_attr("artifact", outcome.artifact)
    trial.set_user_attr("epochs_run", len([p for p in reader.history if p[0] is not None]))
    if reader.last is not None:
        trial.set_user_attr("objective", reader.last)
    if runner.stopping.is_set() and pruned_at is None and code != 0:
        printer.finished(trial.number, "interrupted (it runs again on resume)", None, seconds)
        raise TrialInterrupted(name)
    if pruned_at is not None:
        printer.finished(trial.number, f"stopped early after epoch {pruned_at}", reader.last,
                         seconds)
        raise optuna.TrialPruned(f"stopped after epoch {pruned_at}")
    if code != 0:
        trial.set_user_attr("failure", outcome.failure)
        printer.finished(trial.number, f"FAILED: {outcome.failure}", None, seconds)
        raise TrialFailed(outcome.failure)
    if reader.last is None or not math.isfinite(reader.last):
        reason = f"the job never logged a finite {tuning.objective}"
        trial.set_user_attr("failure", reason)
        printer.finished(trial.number, f"FAILED: {reason}", None, seconds)
        raise TrialFailed(reason)
    printer.finished(trial.number, "completed", reader.last, seconds)
    return reader.last


class _Printer:
    """One line when a trial starts and one when it ends (trials run in parallel threads)."""

    def __init__(self, objective: str):
        self.objective = objective
        self._lock = threading.Lock()

    def started(self, number: int, name: str, hyperparameters: dict, tuning: TuningSection):
        tuned = " ".join(f"{key}={_short(hyperparameters[key])}" for key in tuning.ranges)
        self._print(f"trial {number}: started {name} ({tuned})")

    def finished(self, number: int, what: str, value: float | None, seconds: float):
        shown = f" {self.objective}={value:.4f}" if value is not None else ""
        self._print(f"trial {number}: {what}{shown} in {seconds:.0f} s")

    def _print(self, text: str):
        with self._lock:
            print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_summary(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial as a row: the same shape the SageMaker backend's jobs table uses."""
    rows = []
    for trial in study.trials:
        status = {TrialState.COMPLETE: "Completed", TrialState.PRUNED: "Stopped",
                  TrialState.FAIL: "Failed", TrialState.RUNNING: "InProgress",
                  TrialState.WAITING: "Pending"}[trial.state]
        if _interrupted(trial):
            status = "Interrupted"
        rows.append({"job": trial.user_attrs.get("job", f"trial-{trial.number}"),
                     "status": status,
                     "hyperparameters": trial.user_attrs.get("hyperparameters", {}),
                     "objective": trial.value if trial.state == TrialState.COMPLETE else
                     trial.user_attrs.get("objective"),
                     "seconds": trial.user_attrs.get("seconds"),
                     "epochs": trial.user_attrs.get("epochs_run"),
                     "artifact": trial.user_attrs.get("artifact"),
                     "failure": trial.user_attrs.get("failure"),
                     "intermediate": sorted(trial.intermediate_values.items())})
    return rows
