"""Lay out a folder like SageMaker's /opt/ml for the `process` backend, and find a job's
results in what any backend left.

SageMaker writes three config files and mounts each channel under input/data/ before it
runs `train`; this does the same on local disk, so `SAGEMAKER_BASE_DIR=DIR python -m
dogbreed.train` runs the exact code path the container runs. Channels are symlinked,
not copied: the real data set is 1 GB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from dogbreed.job_outputs import JobOutputs, JobOutputsError, find_job_outputs

from launcher.errors import LauncherError


def prepare_training_dir(base_dir: str | Path, hyperparameters: Mapping[str, Any],
                         channels: Mapping[str, str | Path], hosts: list[str] | None = None,
                         current_host: str | None = None) -> Path:
    """Write input/config/*.json and link the channels; returns the base dir."""
    base = Path(base_dir)
    hosts = hosts or ["algo-1"]
    current_host = current_host or hosts[0]
    config = base / "input" / "config"
    data = base / "input" / "data"
    config.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    # SageMaker passes every hyperparameter as a string.
    _write_json(config / "hyperparameters.json",
                {key: str(value) for key, value in hyperparameters.items()})
    _write_json(config / "inputdataconfig.json",
                {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                        "RecordWrapperType": "None"} for name in channels})
    _write_json(config / "resourceconfig.json",
                {"current_host": current_host, "hosts": hosts,
                 "network_interface_name": "eth0"})
    for name, source in channels.items():
        link = data / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(source).resolve(), target_is_directory=True)
    for folder in ("model", "output/data", "checkpoints"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    return base


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def job_outputs(source: Path, unpack_to: Path, role: str) -> JobOutputs:
    """The model and output data in a job folder, a model/ or output/data/ folder, or a
    model.tar.gz or output.tar.gz (unpacked under `unpack_to`): the one finder every
    command and backend uses (`dogbreed.job_outputs`), with the launcher's errors, which
    name the `role` the user gave `source` for ("model", "output data")."""
    try:
        return find_job_outputs(Path(source), unpack_to)
    except JobOutputsError as error:
        raise LauncherError(f"{role} {error}") from None
