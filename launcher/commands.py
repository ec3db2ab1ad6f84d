"""What each `python -m launcher <command>` does, one function per command.

A backend decides where a job or endpoint runs, never what it does: every command reads
the same config, validates hyperparameters with the training program's own parser before
anything starts, and records what it created in the workdir's state file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from dogbreed.hyperparameters import HyperparameterError, parse_hyperparameters
from launcher import endpoints, jobs, tuning_results
from launcher.debugging import debugging_settings
from launcher.config import Config
from launcher.errors import LauncherError
from launcher.state import load_state, locked_state, update_state


# ---- shared -----------------------------------------------------------------------------

def again(args) -> str:
    """The options to repeat in a suggested next command (same config, same workdir)."""
    return "".join(f" --{key} {value}" for key, value in
                   (("config", args.config), ("workdir", args.workdir)) if value)


def effective_config_file(config: Config, workdir: Path) -> Path:
    """The config as one file that child processes (trials, endpoints) load the same way."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "effective-config.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    return path


def merged_hyperparameters(config: Config, from_file: str | None,
                           overrides: dict[str, str]) -> dict[str, str]:
    """config's static ones < the file (a tuner's best.json or a plain object) < --set."""
    values: dict[str, Any] = dict(config.training.hyperparameters)
    if from_file:
        path = Path(from_file)
        if not path.is_file():
            raise LauncherError(f"hyperparameters file {path} not found")
        try:
            document = json.loads(path.read_text())
        except ValueError as error:
            raise LauncherError(f"hyperparameters file {path} is not JSON: {error}") from None
        found = document.get("hyperparameters", document) if isinstance(document, dict) \
            else None
        if not isinstance(found, dict):
            raise LauncherError(f"hyperparameters file {path}: expected a JSON object of "
                                "hyperparameters, or a tuner's best.json")
        values.update(found)
    values.update(overrides)
    strings = {key: str(value) for key, value in values.items()}
    try:
        parse_hyperparameters(strings)
    except HyperparameterError as error:
        raise LauncherError(f"bad hyperparameters: {error}") from None
    return strings


def checked_name(name: str, limit: int, what: str) -> str:
    """SageMaker's naming rule (letters, digits, single hyphens inside), on every backend,
    so a name that works locally also works on AWS."""
    if len(name) > limit or not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", name):
        raise LauncherError(f"{what} name {name!r}: use at most {limit} letters, digits and "
                            "hyphens, starting and ending with a letter or digit")
    return name


def parse_settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise LauncherError(f"--set {pair!r}: use NAME=VALUE, e.g. --set epochs=5")
        settings[name] = value
    return settings


def start_job(backend: str, config: Config, workdir: Path, config_file: Path, name: str,
              hyperparameters: dict[str, str], data_dir: Path,
              sharing: int = 1) -> tuple[jobs.RunningJob, Path]:
    """A training job on a local backend, running; (job, its folder)."""
    job_dir = workdir / "jobs" / name
    channels = jobs.data_channels(data_dir)
    if backend == "process":
        return jobs.start_process_job(job_dir, hyperparameters, channels, name,
                                      sharing), job_dir
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2))
    command = [sys.executable, "-m", "launcher.local_mode_job", str(config_file), name,
               str(job_dir / "hyperparameters.json"), str(data_dir), str(job_dir / "output")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return jobs.RunningJob(name, command, env, job_dir / "train.log"), job_dir


def job_outcome(backend: str, job: jobs.RunningJob, job_dir: Path, code: int) -> jobs.JobOutcome:
    if backend == "process":
        return jobs.process_outcome(job, job_dir, code)
    output = job_dir / "output"
    failure = None
    if code != 0:
        failure = _member(output / "output.tar.gz", "failure") or \
            f"the local-mode job exited with {code} (see {job.log})"
    artifact = str(output / "model.tar.gz") if code == 0 else None
    return jobs.JobOutcome(job.name, code, failure, artifact, job.log)


def _member(archive: Path, name: str) -> str | None:
    if not archive.is_file():
        return None
    with tarfile.open(archive) as opened:
        for member in opened.getmembers():
            if member.name.lstrip("./") == name and member.isfile():
                return opened.extractfile(member).read().decode("utf-8", "replace").strip()
    return None


# ---- data -------------------------------------------------------------------------------

def data(args, config: Config, workdir: Path) -> int:
    from launcher import data as dataset
    if args.delete and not args.upload:
        raise LauncherError("--delete only goes with --upload")
    dest = Path(args.dest or config.data.local_dir)
    if args.synthetic:
        from dogbreed.sample_data import write_sample_data
        if dest.exists() and not dest.is_dir():
            raise LauncherError(f"--dest {dest} is a file, not a folder")
        if dest.exists() and any(dest.iterdir()):
            raise LauncherError(f"{dest} is not empty: pick another --dest, or remove it first")
        try:
            counts = write_sample_data(dest, args.classes, args.images_per_class, args.seed)
        except ValueError as error:
            raise LauncherError(str(error)) from None
        print(f"wrote synthetic data to {dest}: " +
              ", ".join(f"{split} {count}" for split, count in counts.items()))
        root = dest
    elif (dest / "train").is_dir() and not args.zip:
        print(f"{dest} already holds the data: validating it (remove it to download again)")
        root = dest
    else:
        if args.zip:
            archive = Path(args.zip)
            if not archive.is_file():
                raise LauncherError(f"zip file {archive} not found")
        else:
            # Size and digest describe the configured archive, not one from --url.
            archive = dataset.download(args.url or config.data.url,
                                       dest.parent / "dogImages.zip",
                                       None if args.url else config.data.size_bytes,
                                       None if args.url else config.data.sha256)
        root = dataset.unzip(archive, dest.parent)
        if root.resolve() != dest.resolve():
            print(f"note: the data is in {root} (pass --data {root} to tune and train)")
    report = dataset.validate(root)
    print(dataset.validation_summary(report))
    print(f"validation written to {dataset.write_validation(report, root)}")
    if report["problems"]:
        raise LauncherError(f"the data in {root} cannot be trained on: "
                            f"{'; '.join(report['problems'])}")
    if args.upload:
        from launcher.s3_sync import client, sync
        from launcher.sagemaker_sdk import aws_session, s3_data_uri
        target = s3_data_uri(config)
        result = sync(root, target, client(aws_session(config)), delete=args.delete)
        print(result.summary(target))
    return 0


# ---- tune -------------------------------------------------------------------------------

def tune(args, config: Config, workdir: Path) -> int:
    from launcher.ranges import parse_range_option
    ranges = dict(config.tuning.ranges)
    ranges.update(dict(parse_range_option(option) for option in args.range))
    tuning = config.tuning.with_overrides(
        objective=args.objective, direction=args.direction, strategy=args.strategy,
        early_stopping=args.early_stopping, max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs, ranges=ranges)
    config = config.model_copy(update={"tuning": tuning})
    static = {key: value for key, value in
              merged_hyperparameters(config, None, {**debugging_settings(args),
                                                    **parse_settings(args.set)}).items()
              if key not in tuning.ranges}
    # SageMaker: tuning job names are unique per account and at most 32 characters.
    if args.name:
        checked_name(args.name, 32, "tuning job")
    name = args.name or ("dogbreed-tune" if args.backend != "sagemaker"
                         else f"dogbreed-tune-{time.strftime('%m%d-%H%M%S')}-"
                              f"{secrets.token_hex(2)}")
    study_dir = workdir / "tuning" / name
    print(f"tuning on the {args.backend} backend: {tuning.strategy}, {tuning.direction.lower()} "
          f"{tuning.objective}, up to {tuning.max_jobs} job(s), {tuning.max_parallel_jobs} at "
          f"a time, early stopping {tuning.early_stopping}")
    for range_name, spec in tuning.ranges.items():
        print(f"  {range_name}: {spec.describe()}")
    if args.backend == "sagemaker":
        if args.no_wait:
            _start_sagemaker_tuning(config, workdir, name, static)
            print("not waiting (--no-wait); see it in the SageMaker console, and run `tune "
                  f"--backend sagemaker --name {name} --attach` for its results")
            return 0
        if not args.attach:
            _start_sagemaker_tuning(config, workdir, name, static)
        rows, best = _sagemaker_tuning_results(config, workdir, name, static)
    else:
        rows, best = _tune_locally(args, config, workdir, study_dir, static)
    study_dir.mkdir(parents=True, exist_ok=True)
    tuned = list(tuning.ranges)
    table = tuning_results.jobs_table(rows, tuned, tuning.objective, best)
    (study_dir / "jobs.txt").write_text(table + "\n")
    print("\n" + table)
    if rows:
        log_scaled = {n for n, s in tuning.ranges.items() if s.effective_scaling() ==
                      "Logarithmic"}
        plot = tuning_results.plot_trials(rows, study_dir / "trials.png", tuning.objective,
                                          tuning.direction, tuned, log_scaled,
                                          {n for n, s in tuning.ranges.items()
                                           if s.type == "categorical"})
        print(f"\nplot of the trials: {plot}")
    if best is None:
        raise LauncherError("no tuning job completed, so there is no best job (see the "
                            "failures above)")
    best_file = study_dir / "best.json"
    document = tuning_results.write_best(best_file, best, tuning.objective, tuning.direction,
                                         name, args.backend)
    update_state(workdir, last_tuning={"backend": args.backend, "name": name,
                                       "best": str(best_file)})
    value = best["objective"]
    shown = f"{value:.4f}" if isinstance(value, (int, float)) else str(value)
    print(f"best job: {best['job']} with {tuning.objective}={shown}")
    print("  " + " ".join(f"{key}={document['hyperparameters'].get(key, '?')}" for key in tuned))
    print(f"best hyperparameters written to {best_file}\n"
          f"next: python -m launcher train --backend {args.backend}{again(args)} "
          f"--hyperparameters {best_file}")
    return 0


def _tune_locally(args, config: Config, workdir: Path, study_dir: Path, static: dict):
    from launcher import local_tune
    data_dir = Path(args.data or config.data.local_dir)
    jobs.data_channels(data_dir)  # refuse before any trial starts
    config_file = effective_config_file(config, workdir)
    if args.backend == "local":
        from launcher.sagemaker_sdk import check_docker
        check_docker(config.image("train", "local"))
    job_dirs: dict[str, Path] = {}

    def start(name: str, hyperparameters: dict[str, Any]):
        job, job_dir = start_job(args.backend, config, workdir, config_file, name,
                                 {k: str(v) for k, v in hyperparameters.items()}, data_dir,
                                 sharing=config.tuning.max_parallel_jobs)
        job_dirs[name] = job_dir
        return job

    def outcome(job, code: int):
        return job_outcome(args.backend, job, job_dirs[job.name], code)

    if args.fresh:  # trial jobs are named after the study; old ones would be resumed
        for old in (workdir / "jobs").glob(f"{study_dir.name}-[0-9][0-9][0-9]"):
            shutil.rmtree(old)
    study = local_tune.run_study(config, study_dir, local_tune.TrialJob(start, outcome), static,
                                 seed=args.seed, fresh=args.fresh)
    rows = local_tune.trials_summary(study)
    return rows, tuning_results.best_row(rows, config.tuning.direction)


def _start_sagemaker_tuning(config: Config, workdir: Path, name: str, static: dict) -> None:
    from launcher import sagemaker_sdk
    session = sagemaker_sdk.sagemaker_session(config, workdir)
    sagemaker_sdk.start_tuning(config, session, name, static)
    print(f"started tuning job {name}")
    update_state(workdir, last_tuning={"backend": "sagemaker", "name": name})


def _sagemaker_tuning_results(config: Config, workdir: Path, name: str, static: dict):
    """Wait for the tuning job; its jobs table and best job (or why there is none)."""
    from launcher import sagemaker_sdk
    session = sagemaker_sdk.sagemaker_session(config, workdir)
    described = sagemaker_sdk.wait_for_tuning(session, name)
    rows = sagemaker_sdk.tuning_training_jobs(session, name)
    best_job = described.get("BestTrainingJob")
    if not best_job:
        raise LauncherError(f"tuning job {name} ended {described['HyperParameterTuningJobStatus']}"
                            f" with no completed training job: "
                            f"{described.get('FailureReason', 'see the jobs above')}")
    tuned = best_job.get("TunedHyperParameters", {})
    best = {"job": best_job["TrainingJobName"], "status": "Completed",
            "hyperparameters": dict(static, **{k: v.strip('"') for k, v in tuned.items()}),
            "objective": best_job.get("FinalHyperParameterTuningJobObjectiveMetric", {})
            .get("Value"), "seconds": None, "epochs": None, "failure": None}
    return rows or [best], best


# ---- train ------------------------------------------------------------------------------

def train(args, config: Config, workdir: Path) -> int:
    hyperparameters = merged_hyperparameters(config, args.hyperparameters,
                                             {**debugging_settings(args),
                                              **parse_settings(args.set)})
    name = checked_name(args.name, 63, "training job") if args.name else jobs.job_name()
    print(f"training job {name} on the {args.backend} backend")
    print("  " + " ".join(f"{key}={value}" for key, value in sorted(hyperparameters.items())))
    # What `report` shows by default, failed or not (`last_training` is the last model).
    update_state(workdir, last_job={"backend": args.backend, "job": name})
    if args.backend == "sagemaker":
        from launcher import sagemaker_sdk
        session = sagemaker_sdk.sagemaker_session(config, workdir)
        sagemaker_sdk.start_training(config, session, name, hyperparameters)
        update_state(workdir, last_training={"backend": "sagemaker", "job": name,
                                             "artifact": None})
        if args.no_wait:
            print("not waiting (--no-wait)")
            return 0
        described = sagemaker_sdk.wait_for_training(session, name)
        if described["TrainingJobStatus"] != "Completed":
            raise LauncherError(f"training job {name} {described['TrainingJobStatus'].lower()}: "
                                f"{described.get('FailureReason', 'no reason given')}")
        artifact = described["ModelArtifacts"]["S3ModelArtifacts"]
    else:
        data_dir = Path(args.data or config.data.local_dir)
        jobs.data_channels(data_dir)  # refuse before anything starts
        if args.backend == "local":
            from launcher.sagemaker_sdk import check_docker
            check_docker(config.image("train", "local"))
        config_file = effective_config_file(config, workdir)
        job, job_dir = start_job(args.backend, config, workdir, config_file, name,
                                 hyperparameters, data_dir)
        try:
            for line in job.lines():
                print(line, flush=True)
        except KeyboardInterrupt:
            job.stop()
            job.wait()
            if args.backend == "local":  # local mode maps no checkpoint folder to this host
                raise LauncherError(f"interrupted: local-mode job {name} stopped")
            raise LauncherError(f"interrupted: the job saved a checkpoint in {job_dir}; "
                                f"`train --name {name}` with the same settings resumes it")
        outcome = job_outcome(args.backend, job, job_dir, job.wait())
        if outcome.exit_code != 0:
            raise LauncherError(f"training job {name} failed: {outcome.failure} (its report: "
                                f"python -m launcher report --backend {args.backend}"
                                f"{again(args)})")
        artifact = outcome.artifact
    update_state(workdir, last_training={"backend": args.backend, "job": name,
                                         "artifact": artifact})
    print(f"\ntraining job {name} completed; the model is at {artifact}\n"
          f"next: python -m launcher deploy --backend {args.backend}{again(args)}   (deploys it)\n"
          f"      python -m launcher report --backend {args.backend}{again(args)}   (its report)")
    return 0


# ---- deploy -----------------------------------------------------------------------------

def _last_artifact(args, workdir: Path) -> str:
    if args.model:
        return args.model
    last = load_state(workdir).get("last_training")
    if not last or not last.get("artifact"):
        raise LauncherError("no model given and no finished training job in "
                            f"{workdir}: pass --model, or run `train` first")
    if (last["backend"] == "sagemaker") != (args.backend == "sagemaker"):
        raise LauncherError(f"the last model ({last['artifact']}) was trained on the "
                            f"{last['backend']} backend; pass --model for {args.backend}")
    return last["artifact"]


def deploy(args, config: Config, workdir: Path) -> int:
    name = checked_name(args.name or f"dogbreed-{args.backend}", 63, "endpoint")
    artifact = _last_artifact(args, workdir)
    state = load_state(workdir)
    if name in state["endpoints"]:
        raise LauncherError(f"endpoint {name} is already deployed; `cleanup --endpoint {name}` "
                            "first, or pass another --name")
    endpoint_dir = workdir / "endpoints" / name
    record: dict[str, Any] = {"backend": args.backend, "model": artifact,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.backend == "sagemaker":
        from launcher import sagemaker_sdk
        if not artifact.startswith("s3://"):
            raise LauncherError(f"the sagemaker backend deploys a model.tar.gz in S3, not "
                                f"{artifact}")
        session = sagemaker_sdk.sagemaker_session(config, workdir)
        # Recorded first: if a later create fails, cleanup still deletes what was made.
        record.update(model_name=name, endpoint_config=name)
        _remember(workdir, name, record)
        sagemaker_sdk.deploy_endpoint(config, session, "sagemaker", artifact, name, wait=False)
        described = sagemaker_sdk.wait_for_endpoint(session, name)
        if described["EndpointStatus"] != "InService":
            raise LauncherError(f"endpoint {name} is {described['EndpointStatus']}: "
                                f"{described.get('FailureReason', 'no reason given')}")
        print(f"endpoint {name} is in service\n"
              f"next: python -m launcher predict{again(args)} IMAGE...")
        return 0
    if args.port and not endpoints.port_is_free(args.port):
        raise LauncherError(f"port {args.port} is in use: pick another --port, or leave it "
                            "out for a free one")
    if args.backend == "local":
        from launcher.sagemaker_sdk import check_docker
        check_docker(config.image("serve", "local"))
    port = args.port or endpoints.free_port()
    url = f"http://127.0.0.1:{port}"
    if args.backend == "process":
        model_dir = endpoints.model_dir_of(Path(artifact), endpoint_dir / "unpacked")
        process = endpoints.start_serve_process(model_dir, endpoint_dir, port,
                                                config.serving.workers)
    else:
        tarball = endpoints.model_tarball_of(Path(artifact), endpoint_dir / "model.tar.gz")
        process = endpoints.start_local_mode_endpoint(effective_config_file(config, workdir),
                                                      name, tarball, port, endpoint_dir,
                                                      workdir)
    record.update(url=url, pid=process.pid, log=str(endpoint_dir / "serve.log"))
    _remember(workdir, name, record)
    print(f"starting endpoint {name} ({args.backend}) on {url} ...", flush=True)
    try:
        seconds = endpoints.wait_until_ready(
            process, url, endpoint_dir / "serve.log",
            endpoint_dir / endpoints.READY_FILE if args.backend == "local" else None)
    except LauncherError:
        _forget(workdir, name)
        raise
    print(f"endpoint {name} is ready after {seconds:.1f} s at {url}\n"
          f"  curl -s -H 'Content-Type: image/jpeg' --data-binary @photo.jpg {url}/invocations\n"
          f"next: python -m launcher predict{again(args)} IMAGE...\n"
          f"stop: python -m launcher cleanup{again(args)}")
    return 0


def _remember(workdir: Path, name: str, record: dict) -> None:
    with locked_state(workdir) as state:
        state["endpoints"][name] = record
        state["last_endpoint"] = name


def _forget(workdir: Path, name: str) -> None:
    with locked_state(workdir) as state:
        state["endpoints"].pop(name, None)
        if state.get("last_endpoint") == name:
            state.pop("last_endpoint")


# ---- predict ----------------------------------------------------------------------------

def predict(args, config: Config, workdir: Path) -> int:
    from launcher import predict as client
    state = load_state(workdir)
    name = args.endpoint or state.get("last_endpoint")
    if not name or name not in state["endpoints"]:
        known = ", ".join(state["endpoints"]) or "none"
        raise LauncherError(f"no endpoint {name or ''} deployed from {workdir} (known: {known}):"
                            " run `deploy` first, or pass --endpoint")
    record = state["endpoints"][name]
    top_k = args.top_k or config.serving.top_k
    if args.json and not Path(args.json).parent.is_dir():
        raise LauncherError(f"--json {args.json}: folder {Path(args.json).parent} not found")
    if record["backend"] == "sagemaker":
        from launcher import sagemaker_sdk

        def invoke(body: bytes, content_type: str, k: int):
            return sagemaker_sdk.invoke_endpoint(config, name, body, content_type, k)
    else:
        invoke = client.http_invoker(record["url"])
    answers = client.predict_images([Path(image) for image in args.images], invoke, top_k)
    print(f"endpoint {name} ({record['backend']}), top {top_k}:")
    print(client.answers_table(answers))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"image": str(a.image), "status": a.status, "predictions": a.predictions,
              "error": a.error} for a in answers], indent=2) + "\n")
    return 0 if all(answer.error is None for answer in answers) else 1


# ---- report -----------------------------------------------------------------------------

def report(args, config: Config, workdir: Path) -> int:
    """The job's HTML report from its model and its output data (trace, rules, profiler),
    wherever the job left them: a local job folder, or S3 for a SageMaker job."""
    from launcher.report import build_report, output_data_of
    state = load_state(workdir)
    last = state.get("last_job") or state.get("last_training") or {}
    model = output = None
    if args.model or args.output:
        model, output = args.model, args.output
        job = args.job or _label_of(args.model or args.output)
    elif args.job:
        job = args.job
        model, output = _sources_of_job(args.backend, config, workdir, job)
    elif last.get("job"):
        job = last["job"]
        model, output = _sources_of_job(last.get("backend", args.backend), config, workdir,
                                         job)
    if not (model or output):
        raise LauncherError("no job to report on: pass --job, --model or --output, or run "
                            "`train` first")
    out = Path(args.out) if args.out else workdir / "reports" / f"{job}.html"
    if out.is_dir():
        raise LauncherError(f"--out {out} is a folder; give the HTML file's name")
    scratch = workdir / "reports" / job
    shutil.rmtree(scratch, ignore_errors=True)  # no file of an earlier report mixes in
    model_dir = None
    if model:
        model_dir = endpoints.model_dir_of(Path(_fetched(config, model, scratch)),
                                           scratch / "model")
    output_data = None
    if output:
        try:
            output_data = output_data_of(Path(_fetched(config, output, scratch)), scratch)
        except LauncherError as error:  # e.g. a job from before the output data existed
            if model_dir is None:
                raise
            print(f"warning: {error}; the report shows the model alone", file=sys.stderr)
    build_report(model_dir, out, job, output_data=output_data)
    print(f"report written to {out} (open it in a browser)")
    return 0


def _fetched(config: Config, source: str, scratch: Path) -> str:
    """A local path for `source`: itself, or the S3 object downloaded into `scratch`."""
    if not source.startswith("s3://"):
        return source
    from launcher import sagemaker_sdk
    bucket, _, key = source.removeprefix("s3://").partition("/")
    scratch.mkdir(parents=True, exist_ok=True)
    local = scratch / key.rsplit("/", 1)[-1]
    print(f"fetching {source}")
    try:
        sagemaker_sdk.aws_session(config).client("s3").download_file(bucket, key, str(local))
    except Exception as error:
        if "404" in str(error) or "Not Found" in str(error):
            raise LauncherError(f"{source} does not exist") from None
        raise
    return str(local)


def _output_of_artifact(artifact: str | None) -> str | None:
    """SageMaker puts output.tar.gz next to model.tar.gz (JOB/output/)."""
    if artifact and artifact.endswith("/model.tar.gz"):
        return artifact.removesuffix("model.tar.gz") + "output.tar.gz"
    return None


def _label_of(model: str) -> str:
    """A report's name from a model path: the job folder it sits in, where there is one."""
    parts = [part for part in model.removeprefix("s3://").rstrip("/").split("/")
             if part and part not in ("model", "model.tar.gz", "output")]
    return parts[-1] if parts else "model"


def _sources_of_job(backend: str, config: Config, workdir: Path,
                    job: str) -> tuple[str | None, str | None]:
    """(model, output data) of a job by name: from SageMaker, or WORKDIR/jobs/JOB."""
    if backend == "sagemaker":
        from launcher import sagemaker_sdk
        session = sagemaker_sdk.sagemaker_session(config, workdir)
        described = session.sagemaker_client.describe_training_job(TrainingJobName=job)
        artifact = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        output = _output_of_artifact(artifact) or (
            f"{described['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job}/output/"
            "output.tar.gz")
        return artifact, output
    job_dir = workdir / "jobs" / job
    if not job_dir.is_dir():
        raise LauncherError(f"no job {job} in {workdir / 'jobs'}")
    model = next((str(candidate) for candidate in (
        job_dir / "model", job_dir / "output" / "model.tar.gz")
        if (candidate / "model.json" if candidate.name == "model" else candidate).exists()),
        None)
    output_archive = job_dir / "output" / "output.tar.gz"  # local mode
    return model, str(output_archive if output_archive.exists() else job_dir)


# ---- cleanup ----------------------------------------------------------------------------

def cleanup(args, config: Config, workdir: Path) -> int:
    state = load_state(workdir)
    names = args.endpoint or list(state["endpoints"])
    unknown = [name for name in names if name not in state["endpoints"]]
    if unknown:
        raise LauncherError(f"no endpoint {', '.join(unknown)} was deployed from {workdir} "
                            f"(known: {', '.join(state['endpoints']) or 'none'})")
    if not names:
        print(f"nothing to clean up: no endpoints deployed from {workdir}")
        return 0
    for name in names:
        record = state["endpoints"][name]
        if record["backend"] == "sagemaker":
            from launcher import sagemaker_sdk
            deleted = sagemaker_sdk.delete_endpoint(config, name, record.get("model_name"))
            print(f"deleted {', '.join(deleted) or 'nothing (already gone)'}")
        else:
            stopped = endpoints.stop_process(record["pid"])
            print(f"stopped endpoint {name} ({record['backend']}, pid {record['pid']})"
                  if stopped else f"endpoint {name} had already stopped")
        _forget(workdir, name)
    return 0
