"""The `local` backend: SageMaker local mode, our images run by the SageMaker SDK on this
machine's Docker engine. It runs the same way as the process backend (jobs and
endpoints are child processes of the launcher, recorded under WORKDIR), except that each
child drives the SDK: `launcher.local_mode_job`, `launcher.local_endpoint`."""

from __future__ import annotations

import json
import os
import sys
import tarfile
from pathlib import Path

from launcher import endpoints, jobs
from launcher.backends.base import Backend, effective_config_file
from launcher.backends.process import ProcessBackend
from launcher.config import Config


class LocalBackend(ProcessBackend):
    name = "local"
    # The SDK's Transformer in local mode on the serving image, not the process's server.
    transform = Backend.transform

    def check_ready(self, config: Config, kind: str) -> None:
        from launcher.sagemaker_sdk import check_docker
        check_docker(config.image(kind, local=True))

    def start_job(self, config: Config, workdir: Path, config_file: Path, name: str,
                  hyperparameters: dict[str, str], data_dir: Path,
                  sharing: int = 1) -> tuple[jobs.RunningJob, Path]:
        job_dir = workdir / "jobs" / name
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2))
        command = [sys.executable, "-m", "launcher.local_mode_job", str(config_file), name,
                   str(job_dir / "hyperparameters.json"), str(data_dir),
                   str(job_dir / "output")]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return jobs.RunningJob(name, command, env, job_dir / "train.log"), job_dir

    def job_outcome(self, job: jobs.RunningJob, job_dir: Path, code: int) -> jobs.JobOutcome:
        output = job_dir / "output"
        failure = None
        if code != 0:
            failure = _member(output / "output.tar.gz", "failure") or \
                f"the local-mode job exited with {code} (see {job.log})"
        artifact = str(output / "model.tar.gz") if code == 0 else None
        return jobs.JobOutcome(job.name, code, failure, artifact, job.log)

    def interrupted(self, name: str, job_dir: Path) -> str:
        # Local mode maps no checkpoint folder to this host: nothing to resume from.
        return f"interrupted: local-mode job {name} stopped"

    def start_endpoint(self, config: Config, workdir: Path, name: str, artifact: str,
                       endpoint_dir: Path, port: int):
        tarball = endpoints.model_tarball_of(Path(artifact), endpoint_dir / "model.tar.gz")
        return endpoints.start_local_mode_endpoint(effective_config_file(config, workdir),
                                                   name, tarball, port, endpoint_dir, workdir)

    def ready_file(self, endpoint_dir: Path) -> Path | None:
        return endpoint_dir / endpoints.READY_FILE


def _member(archive: Path, name: str) -> str | None:
    """The text of one file in a tar archive (local mode's output.tar.gz), if it is there."""
    if not archive.is_file():
        return None
    with tarfile.open(archive) as opened:
        for member in opened.getmembers():
            if member.name.lstrip("./") == name and member.isfile():
                return opened.extractfile(member).read().decode("utf-8", "replace").strip()
    return None
