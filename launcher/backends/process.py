"""The `process` backend: the training program and the model server as child processes of
this machine, with no Docker and no AWS. Jobs live under WORKDIR/jobs/NAME (laid out like
/opt/ml), endpoints under WORKDIR/endpoints/NAME."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from launcher import endpoints, jobs, tuning_results
from launcher.backends.base import Backend, Invoker, again, effective_config_file
from launcher.config import Config
from launcher.errors import LauncherError
from launcher.state import forget_endpoint, remember_endpoint


class ProcessBackend(Backend):
    name = "process"

    # ---- what the local backends share; LocalBackend changes the marked steps --------

    def check_ready(self, config: Config, kind: str) -> None:
        """Refuse before anything starts when this machine cannot run `kind` jobs."""

    def start_job(self, config: Config, workdir: Path, config_file: Path, name: str,
                  hyperparameters: dict[str, str], data_dir: Path,
                  sharing: int = 1) -> tuple[jobs.RunningJob, Path]:
        """A training job, running; (job, its folder)."""
        job_dir = workdir / "jobs" / name
        return jobs.start_process_job(job_dir, hyperparameters, jobs.data_channels(data_dir),
                                      name, sharing), job_dir

    def job_outcome(self, job: jobs.RunningJob, job_dir: Path, code: int) -> jobs.JobOutcome:
        return jobs.process_outcome(job, job_dir, code)

    def interrupted(self, name: str, job_dir: Path) -> str:
        return (f"interrupted: the job saved a checkpoint in {job_dir}; `train --name {name}`"
                " with the same settings resumes it")

    def start_endpoint(self, config: Config, workdir: Path, name: str, artifact: str,
                       endpoint_dir: Path, port: int):
        model_dir = endpoints.model_dir_of(Path(artifact), endpoint_dir / "unpacked")
        return endpoints.start_serve_process(model_dir, endpoint_dir, port,
                                             config.serving.workers)

    def ready_file(self, endpoint_dir: Path) -> Path | None:
        """A file the endpoint writes once it answers (None: `/ping` says so)."""
        return None

    # ---- the verbs ------------------------------------------------------------------

    def tuning_name(self) -> str:
        return "dogbreed-tune"

    def tune(self, args, config: Config, workdir: Path, name: str, study_dir: Path,
             static: dict[str, str]):
        from launcher import local_tune
        data_dir = self._data_dir(args, config)
        self.check_ready(config, "train")
        config_file = effective_config_file(config, workdir)
        job_dirs: dict[str, Path] = {}

        def start(trial: str, hyperparameters: dict[str, Any]):
            job, job_dir = self.start_job(config, workdir, config_file, trial,
                                          {k: str(v) for k, v in hyperparameters.items()},
                                          data_dir, sharing=config.tuning.max_parallel_jobs)
            job_dirs[trial] = job_dir
            return job

        def outcome(job, code: int):
            return self.job_outcome(job, job_dirs[job.name], code)

        if args.fresh:  # trial jobs are named after the study; old ones would be resumed
            for old in (workdir / "jobs").glob(f"{study_dir.name}-[0-9][0-9][0-9]"):
                shutil.rmtree(old)
        study = local_tune.run_study(config, study_dir, local_tune.TrialJob(start, outcome),
                                     static, seed=args.seed, fresh=args.fresh)
        rows = local_tune.trials_summary(study)
        return rows, tuning_results.best_row(rows, config.tuning.direction)

    def train(self, args, config: Config, workdir: Path, name: str,
              hyperparameters: dict[str, str]) -> str:
        data_dir = self._data_dir(args, config)
        self.check_ready(config, "train")
        config_file = effective_config_file(config, workdir)
        job, job_dir = self.start_job(config, workdir, config_file, name, hyperparameters,
                                      data_dir)
        try:
            for line in job.lines():
                print(line, flush=True)
        except KeyboardInterrupt:
            job.stop()
            job.wait()
            raise LauncherError(self.interrupted(name, job_dir)) from None
        outcome = self.job_outcome(job, job_dir, job.wait())
        if outcome.exit_code != 0:
            raise LauncherError(f"training job {name} failed: {outcome.failure} (its report: "
                                f"python -m launcher report --backend {self.name}"
                                f"{again(args)})")
        return outcome.artifact

    def deploy(self, args, config: Config, workdir: Path, name: str, artifact: str,
               record: dict[str, Any]) -> str:
        if args.port and not endpoints.port_is_free(args.port):
            raise LauncherError(f"port {args.port} is in use: pick another --port, or leave "
                                "it out for a free one")
        self.check_ready(config, "serve")
        endpoint_dir = workdir / "endpoints" / name
        port = args.port or endpoints.free_port()
        url = f"http://127.0.0.1:{port}"
        process = self.start_endpoint(config, workdir, name, artifact, endpoint_dir, port)
        record.update(url=url, pid=process.pid, log=str(endpoint_dir / "serve.log"))
        remember_endpoint(workdir, name, record)
        print(f"starting endpoint {name} ({self.name}) on {url} ...", flush=True)
        try:
            seconds = endpoints.wait_until_ready(process, url, endpoint_dir / "serve.log",
                                                 self.ready_file(endpoint_dir))
        except LauncherError:
            forget_endpoint(workdir, name)
            raise
        return (f"endpoint {name} is ready after {seconds:.1f} s at {url}\n"
                f"  curl -s -H 'Content-Type: image/jpeg' --data-binary @photo.jpg "
                f"{url}/invocations\n"
                f"next: python -m launcher predict{again(args)} IMAGE...\n"
                f"stop: python -m launcher cleanup{again(args)}")

    def transform(self, args, config: Config, workdir: Path, artifact: str, plan, top_k: int):
        """The serving program in batch-transform mode (SAGEMAKER_BATCH=true) on a free
        port for the length of the run; as many requests in flight as its
        /execution-parameters ask (or --concurrency)."""
        import tempfile

        import requests

        from launcher.predict import http_invoker
        from launcher.transform import run_transform
        (workdir / "transforms").mkdir(parents=True, exist_ok=True)
        # one folder per run: two transforms at once must not share a model or a server
        folder = Path(tempfile.mkdtemp(prefix=f"{plan.output_dir.name}-",
                                       dir=workdir / "transforms"))
        model_dir = endpoints.model_dir_of(Path(artifact), folder / "unpacked")
        port = endpoints.free_port()
        url = f"http://127.0.0.1:{port}"
        process = endpoints.start_serve_process(model_dir, folder, port, config.serving.workers,
                                                {"SAGEMAKER_BATCH": "true"})
        try:
            print(f"starting the model server for {artifact} ...", flush=True)
            endpoints.wait_until_ready(process, url, folder / "serve.log")
            parameters = requests.get(f"{url}/execution-parameters", timeout=10).json()
            concurrency = args.concurrency or parameters["MaxConcurrentTransforms"]
            print(f"scoring {len(plan.pending)} file(s), {concurrency} at a time", flush=True)
            result = run_transform(plan, http_invoker(url), top_k, concurrency)
        finally:
            endpoints.stop_process_surely(process.pid)
        shutil.rmtree(folder, ignore_errors=True)  # kept when it failed: its serve.log
        return result

    def invoker(self, config: Config, name: str, record: dict[str, Any]) -> Invoker:
        from launcher.predict import http_invoker
        return http_invoker(record["url"])

    def remove_endpoint(self, config: Config, name: str, record: dict[str, Any]) -> str:
        if endpoints.stop_process(record["pid"]):
            return f"stopped endpoint {name} ({record['backend']}, pid {record['pid']})"
        return f"endpoint {name} had already stopped"

    def job_sources(self, config: Config, workdir: Path,
                    job: str) -> tuple[str | None, str | None]:
        """From WORKDIR/jobs/JOB: the model/ folder (process) or output/model.tar.gz
        (local mode), and the job folder or local mode's output.tar.gz."""
        job_dir = workdir / "jobs" / job
        if not job_dir.is_dir():
            raise LauncherError(f"no job {job} in {workdir / 'jobs'}")
        model = next((str(candidate) for candidate in (
            job_dir / "model", job_dir / "output" / "model.tar.gz")
            if (candidate / "model.json" if candidate.name == "model" else candidate).exists()),
            None)
        output_archive = job_dir / "output" / "output.tar.gz"  # local mode
        return model, str(output_archive if output_archive.exists() else job_dir)

    @staticmethod
    def _data_dir(args, config: Config) -> Path:
        data_dir = Path(args.data or config.data.local_dir)
        jobs.data_channels(data_dir)  # refuse before anything starts
        return data_dir
