"""The SageMaker training-container contract, read through the sagemaker-training toolkit.

Everything the job reads or writes under /opt/ml is named here, so `SAGEMAKER_BASE_DIR`
(read once, by the toolkit, at import) moves all of it for the process backend and tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagemaker_training import environment as toolkit_env

# SageMaker reports at most 1 KiB of output/failure as the job's FailureReason.
FAILURE_REASON_LIMIT = 1024


class JobConfigError(ValueError):
    """The job's /opt/ml configuration is missing or unreadable."""


@dataclass(frozen=True)
class JobPaths:
    base: Path
    model: Path
    output: Path
    output_data: Path
    checkpoints: Path

    @property
    def failure_file(self) -> Path:
        return self.output / "failure"

    @property
    def success_file(self) -> Path:
        return self.output / "success"


@dataclass(frozen=True)
class JobEnvironment:
    paths: JobPaths
    hyperparameters: dict[str, Any]
    channels: dict[str, Path]
    hosts: list[str]
    current_host: str
    num_gpus: int
    num_cpus: int
    network_interface: str | None = None


def job_paths() -> JobPaths:
    """The job's folders; usable even when the config files are broken (to report it)."""
    base = Path(toolkit_env.base_dir)
    return JobPaths(
        base=base,
        model=Path(toolkit_env.model_dir),
        output=Path(toolkit_env.output_dir),
        output_data=Path(toolkit_env.output_data_dir),
        # SageMaker syncs /opt/ml/checkpoints with checkpoint_s3_uri (spot training).
        checkpoints=base / "checkpoints",
    )


def read_job_environment() -> JobEnvironment:
    """Hyperparameters, channels and hosts from input/config/*.json, via the toolkit."""
    for path in (toolkit_env.hyperparameters_file_dir, toolkit_env.input_data_config_file_dir,
                 toolkit_env.resource_config_file_dir):
        if not os.path.isfile(path):
            raise JobConfigError(f"missing SageMaker config file {path}")
    try:
        env = toolkit_env.Environment()
    except (ValueError, KeyError, TypeError) as error:
        raise JobConfigError(f"unreadable SageMaker config in {toolkit_env.input_config_dir}: "
                             f"{error!r}") from None
    return JobEnvironment(
        paths=job_paths(),
        hyperparameters=dict(env.hyperparameters),
        channels={name: Path(path) for name, path in env.channel_input_dirs.items()},
        hosts=list(env.hosts),
        current_host=env.current_host,
        num_gpus=env.num_gpus,
        num_cpus=env.num_cpus,
        network_interface=env.network_interface_name,
    )


def write_failure(paths: JobPaths, reason: str, name: str = "failure") -> None:
    """One readable line in output/failure: SageMaker shows it as the FailureReason."""
    paths.output.mkdir(parents=True, exist_ok=True)
    line = " ".join(reason.split())[:FAILURE_REASON_LIMIT]
    (paths.output / name).write_text(line + "\n")


def write_success(paths: JobPaths, summary: dict[str, Any]) -> None:
    paths.output.mkdir(parents=True, exist_ok=True)
    paths.success_file.write_text(json.dumps(summary) + "\n")
