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
from launcher.backends.base import effective_config_file
from launcher.backends.process import ProcessBackend
from launcher.config import Config
from launcher.errors import LauncherError


class LocalBackend(ProcessBackend):
    name = "local"

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

    def transform(self, args, config: Config, workdir: Path, artifact: str, plan, top_k: int):
        """The SDK's Transformer in local mode on the serving image
        (`launcher.local_transform`, a child process logging to the scratch folder), over
        links to the plan's pending files in one flat folder (local mode reads no
        sub-folders, and the finished files stay out). Its `.out` files are collected even
        when it stops early: local mode writes each as it goes, and moves them to the
        output only at the end."""
        import shutil
        import subprocess
        import tempfile

        from launcher import sagemaker_sdk, transform as batch
        from launcher.local_mode_job import remove_containers
        self.check_ready(config, "serve")
        if args.concurrency and args.concurrency > 1:
            print("note: local mode sends one request at a time (--concurrency is for the "
                  "process and sagemaker backends)")
        (workdir / "transforms").mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{plan.output_dir.name}-",
                                       dir=workdir / "transforms"))
        staged = batch.stage_pending(plan, folder / "input")
        tarball = endpoints.model_tarball_of(Path(artifact), folder / "model.tar.gz")
        if tarball != folder / "model.tar.gz":  # local mode unpacks beside it: not there
            (folder / "model.tar.gz").symlink_to(tarball.resolve())
            tarball = folder / "model.tar.gz"
        name = jobs.job_name("dogbreed-transform")
        log = folder / "transform.log"
        print(f"local-mode transform job {name}: {len(staged)} file(s), one at a time (log: "
              f"{log})", flush=True)
        failure, interrupted = None, False
        with open(log, "w") as output, _OutCounter(folder, len(staged)):
            process = subprocess.Popen(
                [sys.executable, "-m", "launcher.local_transform",
                 str(effective_config_file(config, workdir)), name, str(tarball),
                 str(folder / "input"), str(folder / "output"), str(folder), str(top_k)],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
            try:
                code = process.wait()
            except KeyboardInterrupt:
                interrupted, code = True, None
                try:
                    endpoints.stop_process_surely(process.pid)  # it removes its container
                finally:  # also when a second Ctrl-C killed it first
                    remove_containers(config.image("serve", local=True),
                                      f"{sagemaker_sdk.ENDPOINT_VARIABLE}={name}")
        if code:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            failure = f"the local-mode transform job exited with {code}; the end of {log}:\n{tail}"
        # An empty `.out` is the request in flight when the job stopped: not an answer.
        answers = {staged[path.name[:-len(batch.OUT_SUFFIX)]]: path.read_bytes()
                   for path in folder.rglob("*" + batch.OUT_SUFFIX)
                   if path.name[:-len(batch.OUT_SUFFIX)] in staged and path.is_file()
                   and path.stat().st_size}
        result = batch.finish_job_answers(plan, answers, None if interrupted else
                                          f"no answer from transform job {name}", top_k)
        if failure:  # only its log stays: it says why
            for item in folder.iterdir():
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item, ignore_errors=True)
                elif item != log:
                    item.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)
        if interrupted or failure:
            raise LauncherError(f"{'interrupted' if interrupted else failure}\n{result.scored} "
                                f"answer(s) kept in {plan.output_dir}: run the same command "
                                "again to score the rest")
        return result


class _OutCounter:
    """A progress bar over the `.out` files a local-mode job writes under `folder` (it
    reports nothing itself): counted once a second."""

    def __init__(self, folder: Path, total: int):
        import threading
        self.folder, self.total = folder, total
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from tqdm import tqdm
        with tqdm(total=self.total, unit="image", desc="scoring") as bar:
            while True:
                stopping = self.stop.wait(1)
                try:
                    found = sum(1 for path in self.folder.rglob("*.out")
                                if path.stat().st_size)
                except OSError:  # local mode removed its working folder just then
                    found = bar.n
                bar.update(min(found, self.total) - bar.n)
                if stopping:
                    return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _member(archive: Path, name: str) -> str | None:
    """The text of one file in a tar archive (local mode's output.tar.gz), if it is there."""
    if not archive.is_file():
        return None
    with tarfile.open(archive) as opened:
        for member in opened.getmembers():
            if member.name.lstrip("./") == name and member.isfile():
                return opened.extractfile(member).read().decode("utf-8", "replace").strip()
    return None
