"""A training job running as a child process, read line by line.

Both local backends run a job as a child process: the `process` backend runs the training
program itself (`SAGEMAKER_BASE_DIR=DIR python -m dogbreed.train`), the `local` backend a
launcher process that drives SageMaker local mode. The tuner reads each line as it comes
(the objective per epoch) and can stop a job early; SIGTERM makes the training program
checkpoint and exit, as a SageMaker StopTrainingJob does.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from launcher.errors import LauncherError
from launcher.job_dir import prepare_training_dir

CHANNELS = ("train", "valid", "test")


def job_name(prefix: str = "dogbreed") -> str:
    """SageMaker-style and unique: `dogbreed-20261126-031502-a1b2` (at most 63 characters)."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"[:63]


def data_channels(data_dir: str | Path) -> dict[str, Path]:
    """The channels present under a data folder (train and valid are required)."""
    root = Path(data_dir)
    found = {name: root / name for name in CHANNELS if (root / name).is_dir()}
    missing = [name for name in ("train", "valid") if name not in found]
    if missing:
        raise LauncherError(f"no {' or '.join(missing)} folder under {root}: run `python -m "
                            "launcher data` (or `data --synthetic`) first, or pass --data")
    return found


@dataclass
class JobOutcome:
    name: str
    exit_code: int
    failure: str | None
    artifact: str | None
    log: Path


class RunningJob:
    """A child process whose combined output is read line by line and kept in a log file."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], log: Path):
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log, "a")
        # Its own process group: a Ctrl-C in the terminal reaches the launcher, which then
        # stops the job on purpose (checkpoint first) instead of killing it half-way.
        self.process = subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1,
                                        start_new_session=True)

    def lines(self) -> Iterator[str]:
        for line in self.process.stdout:
            self._log_file.write(line)
            self._log_file.flush()
            yield line.rstrip("\n")

    def stop(self) -> None:
        """Ask the job to end (SIGTERM: checkpoint, then exit 143)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 120) -> int:
        for _ in self.lines():  # drain what is left
            pass
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log_file.close()
        return code


def start_process_job(job_dir: Path, hyperparameters: Mapping[str, object],
                      channels: Mapping[str, Path], name: str, sharing: int = 1) -> RunningJob:
    """The training program on a folder laid out like /opt/ml (resumes if it has a checkpoint).

    `sharing` jobs run side by side on this machine: each gets that share of the CPU
    threads, since every one of them would otherwise use them all (measured on 2 cores:
    two 4-epoch jobs side by side took 110-170 s each, against 21 s for one alone).
    """
    prepare_training_dir(job_dir, hyperparameters, channels)
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(job_dir.resolve()), PYTHONUNBUFFERED="1")
    if sharing > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // sharing))
    return RunningJob(name, [sys.executable, "-m", "dogbreed.train"], env, job_dir / "train.log")


def process_outcome(job: RunningJob, job_dir: Path, exit_code: int) -> JobOutcome:
    failure_file = job_dir / "output" / "failure"
    failure = failure_file.read_text().strip() if failure_file.is_file() else None
    if exit_code != 0 and not failure:
        failure = f"the training program exited with {exit_code} (see {job.log})"
    artifact = str(job_dir / "model") if exit_code == 0 else None
    return JobOutcome(job.name, exit_code, failure, artifact, job.log)
