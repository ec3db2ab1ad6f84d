"""What each `python -m launcher <command>` does, one function per command.

A backend decides where a job or endpoint runs, never what it does: every command reads
the same config, validates hyperparameters with the training program's own parser before
anything starts, and records what it created in the workdir's state file; for the part
that differs it calls the backend (`launcher.backends`), never tests its name.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from dogbreed.hyperparameters import HyperparameterError, parse_hyperparameters
from launcher import backends, endpoints, jobs, tuning_results
from launcher.backends.base import again
from launcher.debugging import debugging_settings
from launcher.config import Config
from launcher.errors import LauncherError
from launcher.job_dir import job_outputs
from launcher.state import forget_endpoint, load_state, update_state


# ---- shared -----------------------------------------------------------------------------

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
    # SageMaker's limit, on every backend.
    if args.name:
        checked_name(args.name, 32, "tuning job")
    backend = backends.backend(args.backend)
    name = args.name or backend.tuning_name()
    study_dir = workdir / "tuning" / name
    print(f"tuning on the {args.backend} backend: {tuning.strategy}, {tuning.direction.lower()} "
          f"{tuning.objective}, up to {tuning.max_jobs} job(s), {tuning.max_parallel_jobs} at "
          f"a time, early stopping {tuning.early_stopping}")
    for range_name, spec in tuning.ranges.items():
        print(f"  {range_name}: {spec.describe()}")
    found = backend.tune(args, config, workdir, name, study_dir, static)
    if found is None:  # not waiting
        return 0
    rows, best = found
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
    artifact = backends.backend(args.backend).train(args, config, workdir, name,
                                                   hyperparameters)
    if artifact is None:  # not waiting
        return 0
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
    if backends.backend(last["backend"]).remote != backends.backend(args.backend).remote:
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
    record: dict[str, Any] = {"backend": args.backend, "model": artifact,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(backends.backend(args.backend).deploy(args, config, workdir, name, artifact, record))
    return 0


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
    invoke = backends.backend(record["backend"]).invoker(config, name, record)
    answers = client.predict_images([Path(image) for image in args.images], invoke, top_k)
    print(f"endpoint {name} ({record['backend']}), top {top_k}:")
    print(client.answers_table(answers))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"image": str(a.image), "status": a.status, "predictions": a.predictions,
              "error": a.error} for a in answers], indent=2) + "\n")
    return 0 if all(answer.error is None for answer in answers) else 1


# ---- transform ----------------------------------------------------------------------------

def transform(args, config: Config, workdir: Path) -> int:
    from launcher import transform as batch
    input_dir = Path(args.input)
    output_dir = Path(args.output) if args.output else \
        workdir / "transform" / (input_dir.resolve().name or "input")
    top_k = args.top_k or config.serving.top_k
    result = _scored(args, config, workdir, input_dir, output_dir, top_k)
    plan = result.plan
    print(f"{len(plan.files)} file(s): {result.scored} scored now, {plan.already_done} already "
          f"done, {len(result.failed)} failed; answers in {output_dir}, table in {result.csv}")
    for file, reason in list(result.failed.items())[:10]:
        print(f"  {file}: {reason}")
    if len(result.failed) > 10:
        print(f"  ... and {len(result.failed) - 10} more (see {batch.CSV_FILE})")
    return 1 if result.failed else 0


def _scored(args, config: Config, workdir: Path, input_dir: Path, output_dir: Path,
            top_k: int):
    """`transform`'s work, shared with `evaluate`: through a deployed endpoint
    (--endpoint), or the backend's own transform of the model."""
    from launcher import transform as batch
    batch.check_folders(input_dir, output_dir)  # the user's folders before the model
    if args.endpoint:
        name, record = _endpoint_record(args.endpoint, workdir)
        source = {"endpoint": name, "model": record.get("model"), "top_k": top_k}
    else:
        artifact = _last_artifact(args, workdir)
        source = {"model": str(Path(artifact).resolve()) if "://" not in artifact else artifact,
                  "top_k": top_k}
    plan = batch.plan_transform(input_dir, output_dir, source)  # refused before anything
    if not plan.pending:  # no server, container or job for nothing
        print(f"every image of {input_dir} has its answer in {output_dir} already")
        return batch.finish_job_answers(plan, {}, None, top_k)
    if args.endpoint:
        invoke = backends.backend(record["backend"]).invoker(config, name, record)
        print(f"scoring {len(plan.pending)} file(s) through endpoint {name}", flush=True)
        return batch.run_transform(plan, invoke, top_k,
                                   args.concurrency or batch.ENDPOINT_CONCURRENCY)
    return backends.backend(args.backend).transform(args, config, workdir, artifact, plan,
                                                    top_k)


# ---- evaluate ----------------------------------------------------------------------------

EVALUATION_TOP_K = 5  # top-5 accuracy needs five answers per photo
THUMBNAIL_PIXELS = 160


def evaluate(args, config: Config, workdir: Path) -> int:
    """Score a labelled split (its folder names are the truth) through an endpoint or a
    transform, and write the evaluation page; compare with the job's own test_accuracy."""
    from launcher import evaluation
    from launcher import transform as batch
    split_dir = Path(args.data or config.data.local_dir) / args.split
    if not split_dir.is_dir():
        raise LauncherError(f"split folder {split_dir} not found: pass --data (the folder "
                            "with train/, valid/, test/) and --split")
    artifact = _evaluated_model(args, workdir)
    label = _label_of(artifact)
    out = Path(args.out) if args.out else workdir / "evaluations" / f"{label}-{args.split}"
    if out.exists() and not out.is_dir():
        raise LauncherError(f"--out {out} is a file; give a folder")
    description = _model_description(config, artifact, out / "model")
    folders = {folder: index for index, folder in enumerate(description["class_folders"])}
    unknown = sorted({path.name for path in split_dir.iterdir() if path.is_dir()} - set(folders))
    if unknown:
        raise LauncherError(f"{split_dir} has folders the model does not know: "
                            f"{', '.join(unknown[:5])}; is it the data the model was trained "
                            "on?")
    if not args.endpoint:
        args.model = artifact
    result = _scored(args, config, workdir, split_dir, out / "transform", EVALUATION_TOP_K)
    scored = []
    for file in result.plan.files:
        predictions = batch.read_answer(batch.answer_path(out / "transform", file))
        folder = file.split("/")[0]
        if predictions is not None and folder in folders:
            scored.append(evaluation.Scored(file, folders[folder], predictions))
    if not scored:
        raise LauncherError(f"no photo of {split_dir} was scored; see "
                            f"{out / 'transform' / batch.CSV_FILE}")
    # The job's test_accuracy covers the whole test split: compared only with the same
    job_accuracy = (description.get("metrics") or {}).get("test_accuracy") \
        if args.split == "test" and not result.failed else None
    metrics = evaluation.evaluate(scored, description["class_names"], job_accuracy)
    thumbnails = _thumbnails(split_dir, [m["file"] for m in metrics["worst_mistakes"]])
    page = evaluation.write_page(metrics, out, thumbnails,
                                 title=f"{label} on {args.split} ({len(scored)} photos)")
    print(evaluation.print_summary(metrics))
    if result.failed:
        print(f"{len(result.failed)} file(s) not scored, left out (see "
              f"{out / 'transform' / batch.CSV_FILE})")
    print(f"page: {page}\ndata: {out / 'evaluation.json'}")
    return 0


def _evaluated_model(args, workdir: Path) -> str:
    if args.endpoint:
        return _endpoint_record(args.endpoint, workdir)[1]["model"]
    return _last_artifact(args, workdir)


def _model_description(config: Config, artifact: str, scratch: Path) -> dict:
    """The artifact's model.json: class folders and names, and the job's own metrics."""
    model_dir = endpoints.model_dir_of(Path(_fetched(config, artifact, scratch)),
                                       scratch / "unpacked")
    return json.loads((model_dir / "model.json").read_text())


def _thumbnails(split_dir: Path, files: list[str]) -> dict[str, bytes]:
    import io

    from PIL import Image, ImageOps
    thumbnails = {}
    for file in files:
        try:
            with Image.open(split_dir / file) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
                image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=85)
        except OSError:
            continue  # the page says "no thumbnail"
        thumbnails[file] = buffer.getvalue()
    return thumbnails


def _endpoint_record(name: str, workdir: Path) -> tuple[str, dict]:
    state = load_state(workdir)
    if name not in state["endpoints"]:
        known = ", ".join(state["endpoints"]) or "none"
        raise LauncherError(f"no endpoint {name} deployed from {workdir} (known: {known}): run "
                            "`deploy` first, or leave out --endpoint to score with --model")
    return name, state["endpoints"][name]


# ---- report -----------------------------------------------------------------------------

def report(args, config: Config, workdir: Path) -> int:
    """The job's HTML report from its model and its output data (trace, rules, profiler),
    wherever the job left them: a local job folder, or S3 for a SageMaker job."""
    from launcher.report import build_report
    state = load_state(workdir)
    last = state.get("last_job") or state.get("last_training") or {}
    model = output = None
    if args.model or args.output:
        model, output = args.model, args.output
        job = args.job or _label_of(args.model or args.output)
    elif args.job:
        job = args.job
        model, output = backends.backend(args.backend).job_sources(config, workdir, job)
    elif last.get("job"):
        job = last["job"]
        model, output = backends.backend(last.get("backend", args.backend)).job_sources(
            config, workdir, job)
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
            output_data = job_outputs(Path(_fetched(config, output, scratch)), scratch,
                                      "output data").output_data
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


def _label_of(model: str) -> str:
    """A report's name from a model path: the job folder it sits in, where there is one."""
    parts = [part for part in model.removeprefix("s3://").rstrip("/").split("/")
             if part and part not in ("model", "model.tar.gz", "output")]
    return parts[-1] if parts else "model"


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
        print(backends.backend(record["backend"]).remove_endpoint(config, name, record))
        forget_endpoint(workdir, name)
    return 0
