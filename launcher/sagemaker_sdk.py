"""Every SageMaker Python SDK 2.x and AWS call the launcher makes, in one module.

SDK 3.x dropped Estimator, HyperparameterTuner, Model and local mode; keeping the SDK in
one place means a later move touches this file only. The SDK is imported inside the
functions: it takes seconds to import and `--help` must not wait for it.

Both `local` (SageMaker local mode: our images under Docker, no AWS) and `sagemaker`
(real jobs and endpoints) go through here; the `process` backend never does.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from launcher.config import Config
from launcher.docker_network import ensure_local_network
from launcher.errors import LauncherError
from launcher.ranges import HyperparameterRange

TELEMETRY_OPT_OUT = ("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                     "      TelemetryOptOut: true\n")
# Set in a local-mode endpoint's container, so that its container can be found again.
ENDPOINT_VARIABLE = "DOGBREED_LOCAL_ENDPOINT"
POLL_SECONDS = float(os.environ.get("LAUNCHER_POLL_SECONDS", "30"))


def quiet_sdk(workdir: Path) -> None:
    """Keep the SDK from phoning home: no telemetry, no v3 banner. The metadata service
    stays on here: on EC2 or a SageMaker notebook it is where the credentials come from."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    # "Fetched defaults config from ..." on every call is noise next to our own lines.
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "sagemaker-sdk-config.yaml"
        path.write_text(TELEMETRY_OPT_OUT)
        os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(path.resolve())


def local_session(workdir: Path, serving_port: int | None = None):
    """A LocalSession that needs no AWS account (SageMaker local mode on Docker)."""
    quiet_sdk(workdir)
    # No AWS call is needed, so none may wait for an instance metadata service that is
    # not there (seconds of timeouts off EC2). Local mode only: see quiet_sdk.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    # The SDK builds boto3 clients even in local mode; they need a region and credentials
    # to exist, never to work. Real ones, if the user has them, are left alone.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import boto3
    if boto3.session.Session().get_credentials() is None:
        os.environ["AWS_ACCESS_KEY_ID"] = "local-mode"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local-mode"
    check_docker()
    # Compose would create it on first use, racing a parallel trial (see docker_network).
    ensure_local_network()
    from sagemaker.local import LocalSession
    session = LocalSession()
    root = (workdir / "container_root").resolve()
    root.mkdir(parents=True, exist_ok=True)
    session.config = {"local": {"local_code": True, "container_root": str(root),
                                **({"serving_port": serving_port} if serving_port else {})}}
    return session


def check_docker(image: str | None = None) -> None:
    """Docker is there and running (and has `image`), or a clear error saying what to do."""
    import shutil
    import subprocess
    if shutil.which("docker") is None:
        raise LauncherError("the local backend needs Docker: no `docker` command found "
                            "(`bash docker/engine.sh` installs and starts it on Debian)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise LauncherError("the local backend needs a running Docker engine (`bash "
                            "docker/engine.sh` starts it)")
    if image and subprocess.run(["docker", "image", "inspect", image],
                                capture_output=True).returncode != 0:
        raise LauncherError(f"image {image} not found: run `make build` (or set images in "
                            "the config)")


def aws_session(config: Config):
    """A boto3 session that is known to have credentials and a region, or a clear error."""
    import boto3
    session = boto3.session.Session(region_name=config.aws.region)
    if session.get_credentials() is None:
        raise LauncherError("the sagemaker backend needs AWS credentials: configure a profile "
                            "(`aws configure`), or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY")
    if not session.region_name:
        raise LauncherError(f"no AWS region: set aws.region in {config.source} or "
                            "AWS_DEFAULT_REGION")
    return session


def sagemaker_session(config: Config, workdir: Path):
    boto_session = aws_session(config)
    if not config.aws.role_arn:
        raise LauncherError(f"aws.role_arn is not set in {config.source}: SageMaker runs jobs "
                            "and endpoints as that IAM role")
    quiet_sdk(workdir)
    import sagemaker
    return sagemaker.Session(boto_session=boto_session,
                             default_bucket=config.aws.bucket)


ECR_URI = re.compile(r"^\d{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")


def image_uri(config: Config, kind: str, local: bool, session) -> str:
    """The image for a job or endpoint (`local`: SageMaker local mode); on SageMaker it
    must be in the session's region, since SageMaker pulls from ECR in its own region only
    (and `make push` may have used another default region than the config)."""
    uri = config.image(kind, local=local)
    found = ECR_URI.match(uri)
    if not local and found and found.group(1) != session.boto_region_name:
        raise LauncherError(
            f"the {kind} image {uri} is in {found.group(1)}, but jobs run in "
            f"{session.boto_region_name}: push it there (`make push REGION="
            f"{session.boto_region_name}`), or set aws.region in {config.source}")
    return uri


def short_error(error: Exception) -> str:
    """An AWS error's first line, without an HTML error page a server may have attached."""
    return str(error).splitlines()[0].split(": <", 1)[0]


# ---- training ---------------------------------------------------------------------------

def estimator(config: Config, session, local: bool, hyperparameters: Mapping[str, Any],
              output_path: str, base_job_name: str = "dogbreed",
              checkpoint_job: str | None = None):
    """Our training image as an Estimator; SageMaker passes hyperparameters as strings.

    `checkpoint_job`: keep checkpoints under the checkpoint URI + /JOB, so that a restarted
    spot job finds its own and no other. Without it (a tuning job's jobs, which would all
    share one prefix and refuse each other's checkpoints) no checkpoints are synced.
    """
    from sagemaker.estimator import Estimator
    training = config.training
    options: dict[str, Any] = {}
    if local:
        options.update(instance_type="local", instance_count=training.instance_count)
    else:
        options.update(instance_type=training.instance_type,
                       instance_count=training.instance_count,
                       volume_size=training.volume_size_gb, max_run=training.max_run_seconds)
        if training.spot:
            options.update(use_spot_instances=True,
                           max_wait=training.max_wait_seconds or training.max_run_seconds)
        if checkpoint_job and (training.spot or training.checkpoint_s3_uri):
            base = (training.checkpoint_s3_uri or f"{config.s3_prefix()}/checkpoints")
            options["checkpoint_s3_uri"] = f"{base.rstrip('/')}/{checkpoint_job}"
        options.update(locked_down_training(config))
    return Estimator(
        image_uri=image_uri(config, "train", local, session), role=config.aws.role_arn or
        "arn:aws:iam::123456789012:role/LocalMode", output_path=output_path,
        sagemaker_session=session, base_job_name=base_job_name,
        hyperparameters={key: str(value) for key, value in hyperparameters.items()},
        metric_definitions=config.metric_definitions,
        # SageMaker Debugger is closed to new customers: the image carries its own hook,
        # and its output travels with the job's output instead.
        debugger_hook_config=False, disable_profiler=True, **options)


def locked_down_training(config: Config) -> dict[str, Any]:
    """The security options as Estimator arguments, for SageMaker jobs only: local mode runs
    on the user's Docker, with no VPC, KMS or isolation to apply them to. A tuning job's
    TrainingJobDefinition takes them from the same Estimator.

    What the config leaves off goes as None, not False: then an administrator's SageMaker
    defaults config (/etc/xdg/sagemaker/config.yaml), which can set each of these, applies."""
    training = config.training
    vpc = training.vpc_config or {}
    return {"enable_network_isolation": training.network_isolation,
            "encrypt_inter_container_traffic": training.encrypt_inter_container_traffic or None,
            "subnets": vpc.get("Subnets"), "security_group_ids": vpc.get("SecurityGroupIds"),
            "volume_kms_key": training.volume_kms_key,
            "output_kms_key": training.output_kms_key}


def s3_data_uri(config: Config) -> str:
    return (config.data.s3_uri or f"{config.s3_prefix()}/data").rstrip("/")


def s3_channels(config: Config, session) -> dict[str, str]:
    """The channels found under the data URI (train and valid must be there; test may)."""
    base = s3_data_uri(config)
    bucket, _, prefix = base.removeprefix("s3://").partition("/")
    s3 = session.boto_session.client("s3")
    found = {}
    for name in ("train", "valid", "test"):
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{name}/".lstrip("/"),
                                    MaxKeys=1)
        if listed.get("KeyCount", 0):
            found[name] = f"{base}/{name}"
    missing = [name for name in ("train", "valid") if name not in found]
    if missing:
        raise LauncherError(f"no {' or '.join(missing)} data under {base}: upload it with "
                            "`python -m launcher data --upload`")
    return found


def fit_local(config: Config, workdir: Path, job_name: str, hyperparameters: Mapping[str, Any],
              channels: Mapping[str, Path], output_dir: Path) -> None:
    """One local-mode training job; the containers' output streams to stdout."""
    session = local_session(workdir)
    output_dir.mkdir(parents=True, exist_ok=True)
    job = estimator(config, session, True, hyperparameters, f"file://{output_dir.resolve()}")
    job.fit({name: f"file://{Path(path).resolve()}" for name, path in channels.items()},
            job_name=job_name, logs="All")


def start_training(config: Config, session, job_name: str,
                   hyperparameters: Mapping[str, Any]) -> str:
    job = estimator(config, session, False, hyperparameters,
                    f"{config.s3_prefix()}/jobs", checkpoint_job=job_name)
    job.fit(s3_channels(config, session), job_name=job_name, wait=False)
    return job_name


def wait_until_done(describe, status_key: str, status_line, done: tuple[str, ...]) -> dict:
    """Poll `describe()` until description[status_key] is one of `done`, printing
    `status_line(description)` whenever it changes; the final description."""
    seen = None
    while True:
        described = describe()
        line = status_line(described)
        if line != seen:
            print(f"  {time.strftime('%H:%M:%S')} {line}", flush=True)
            seen = line
        if described[status_key] in done:
            return described
        time.sleep(POLL_SECONDS)


def wait_for_training(session, job_name: str) -> dict:
    return wait_until_done(
        lambda: session.sagemaker_client.describe_training_job(TrainingJobName=job_name),
        "TrainingJobStatus", lambda d: f"{job_name}: {d['TrainingJobStatus']} ({d.get('SecondaryStatus')})",
        ("Completed", "Failed", "Stopped"))


# ---- tuning -----------------------------------------------------------------------------

def parameter_range(spec: HyperparameterRange):
    from sagemaker.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
    if spec.type == "categorical":
        return CategoricalParameter([str(value) for value in spec.values])
    if spec.type == "integer":
        return IntegerParameter(int(spec.min), int(spec.max), scaling_type=spec.scaling)
    return ContinuousParameter(spec.min, spec.max, scaling_type=spec.scaling)


def start_tuning(config: Config, session, tuning_job_name: str,
                 static_hyperparameters: Mapping[str, Any]) -> str:
    from sagemaker.tuner import HyperbandStrategyConfig, HyperparameterTuner, StrategyConfig
    tuning = config.tuning
    static = {key: value for key, value in static_hyperparameters.items()
              if key not in tuning.ranges}
    base = estimator(config, session, False, static, f"{config.s3_prefix()}/jobs")
    strategy_config = None
    if tuning.strategy == "Hyperband":
        epochs = int(static.get("epochs", 10))
        strategy_config = StrategyConfig(HyperbandStrategyConfig(
            max_resource=tuning.hyperband_max_resource or epochs,
            min_resource=tuning.hyperband_min_resource or 1))
    tuner = HyperparameterTuner(
        base, objective_metric_name=tuning.objective, objective_type=tuning.direction,
        hyperparameter_ranges={name: parameter_range(spec)
                               for name, spec in tuning.ranges.items()},
        metric_definitions=config.metric_definitions, strategy=tuning.strategy,
        strategy_config=strategy_config,
        max_jobs=None if tuning.strategy == "Grid" else tuning.max_jobs,
        max_parallel_jobs=tuning.max_parallel_jobs,
        early_stopping_type=tuning.early_stopping)
    tuner.fit(s3_channels(config, session), job_name=tuning_job_name, wait=False)
    return tuning_job_name


def wait_for_tuning(session, tuning_job_name: str) -> dict:
    def status_line(described: dict) -> str:
        counters = described.get("TrainingJobStatusCounters", {})
        summary = ", ".join(f"{key} {value}" for key, value in counters.items() if value)
        return (f"{tuning_job_name}: {described['HyperParameterTuningJobStatus']}"
                f"{' (jobs: ' + summary + ')' if summary else ''}")
    return wait_until_done(
        lambda: session.sagemaker_client.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning_job_name),
        "HyperParameterTuningJobStatus", status_line, ("Completed", "Failed", "Stopped"))


def tuning_training_jobs(session, tuning_job_name: str) -> list[dict]:
    """The tuning job's training jobs, each with its hyperparameters and final objective."""
    import botocore.exceptions
    client = session.sagemaker_client
    try:
        pages = client.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
        summaries = [summary for page in pages.paginate(
            HyperParameterTuningJobName=tuning_job_name) for summary in
            page["TrainingJobSummaries"]]
    except botocore.exceptions.ClientError as error:
        print(f"warning: cannot list the tuning job's training jobs ({short_error(error)}); "
              "showing the best job only", file=sys.stderr)
        return []
    return [{"job": summary["TrainingJobName"], "status": summary["TrainingJobStatus"],
             "hyperparameters": summary.get("TunedHyperParameters", {}),
             "objective": (summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {})
             .get("Value"), "failure": summary.get("FailureReason")} for summary in summaries]


# ---- serving ----------------------------------------------------------------------------

def serving_environment(config: Config) -> dict[str, str]:
    env = {}
    if config.serving.workers:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(config.serving.workers)
    return env


def serving_model(config: Config, session, model_data: str, name: str, local: bool,
                  env: Mapping[str, str] | None = None):
    """Our serving image with the model, as an SDK Model (created in SageMaker when it is
    deployed or transforms); in local mode its containers carry ENDPOINT_VARIABLE=name, by
    which they are found and removed."""
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    env = {**serving_environment(config), **(env or {})}
    options: dict[str, Any] = {}
    if local:
        env[ENDPOINT_VARIABLE] = name
    else:
        # The security options: SageMaker only, as for training (see locked_down_training).
        options = {"enable_network_isolation": config.serving.network_isolation,
                   "vpc_config": config.serving.vpc_config}
    return Model(image_uri=image_uri(config, "serve", local, session), model_data=model_data,
                 role=config.aws.role_arn or "arn:aws:iam::123456789012:role/LocalMode",
                 sagemaker_session=session, predictor_cls=Predictor, name=name, env=env,
                 **options)


def deploy_endpoint(config: Config, session, model_data: str, name: str,
                    wait: bool = True, local: bool = False):
    """Model + endpoint config + endpoint on our serving image (`local`: SageMaker local
    mode); returns the SDK Predictor."""
    serving = config.serving
    if local:
        options: dict[str, Any] = {"instance_type": "local"}
    else:
        options = {"instance_type": serving.instance_type, "kms_key": serving.volume_kms_key}
        if serving.ami_version:  # a driver that runs the image's CUDA
            options["inference_ami_version"] = serving.ami_version
    model = serving_model(config, session, model_data, name, local)
    return model.deploy(initial_instance_count=serving.instance_count,
                        endpoint_name=name, wait=wait, **options)


def wait_for_endpoint(session, name: str) -> dict:
    return wait_until_done(
        lambda: session.sagemaker_client.describe_endpoint(EndpointName=name),
        "EndpointStatus", lambda d: f"endpoint {name}: {d['EndpointStatus']}",
        ("InService", "Failed", "OutOfService"))


def invoke_endpoint(config: Config, name: str, body: bytes, content_type: str,
                    top_k: int) -> tuple[int, bytes]:
    """One real `InvokeEndpoint` call; (status, body). 4xx from the model come back as errors."""
    import botocore.exceptions
    runtime = aws_session(config).client("sagemaker-runtime")
    try:
        answer = runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType=content_type,
                                         Accept="application/json",
                                         CustomAttributes=f"top_k={top_k}")
    except runtime.exceptions.ModelError as error:
        return (error.response.get("OriginalStatusCode", 500),
                error.response.get("OriginalMessage", str(error)).encode())
    except botocore.exceptions.ClientError as error:
        raise LauncherError(f"InvokeEndpoint {name} failed: {short_error(error)}") from None
    return 200, answer["Body"].read()


def delete_endpoint(config: Config, name: str, model_name: str | None) -> list[str]:
    """Delete the endpoint, its config and its model; what was deleted (missing is fine)."""
    import botocore.exceptions
    client = aws_session(config).client("sagemaker")
    deleted = []
    for kind, call, key, value in (
            ("endpoint", client.delete_endpoint, "EndpointName", name),
            ("endpoint config", client.delete_endpoint_config, "EndpointConfigName", name),
            ("model", client.delete_model, "ModelName", model_name or name)):
        try:
            call(**{key: value})
            deleted.append(f"{kind} {value}")
        except botocore.exceptions.ClientError as error:
            if "not found" not in str(error).lower() and "could not find" not in \
                    str(error).lower():
                raise LauncherError(f"cannot delete {kind} {value}: {error}") from None
    return deleted


# ---- batch transform --------------------------------------------------------------------

# Every image format the serving image reads, sniffed from the bytes: a transform job has
# one ContentType for all its files, and a folder may mix JPEG, PNG, WebP and HEIC.
TRANSFORM_CONTENT_TYPE = "application/x-image"
TRANSFORM_MAX_PAYLOAD_MB = 6  # what the launcher sends at most (predict.MAX_BYTES)
# CreateTransformJob refuses MaxConcurrentTransforms x MaxPayloadInMB over 100 (MB).
TRANSFORM_MAX_CONCURRENCY = 100 // TRANSFORM_MAX_PAYLOAD_MB


def is_gpu_instance(instance_type: str) -> bool:
    return re.match(r"^ml\.[gp]\d", instance_type) is not None


def transform_locally(config: Config, scratch: Path, name: str, model_tarball: Path,
                      input_dir: Path, output_dir: Path, top_k: int) -> None:
    """A local-mode transform job over the files of `input_dir` (one level: local mode
    reads no sub-folders), its `.out` files in `output_dir`. Local mode sends one request
    at a time and waits for the end; its container is left for the caller to remove."""
    from launcher.endpoints import free_port
    session = local_session(scratch, serving_port=free_port())
    model = serving_model(config, session, f"file://{model_tarball.resolve()}", name,
                          local=True, env={"DOGBREED_TOP_K": str(top_k)})
    transformer = model.transformer(instance_count=1, instance_type="local",
                                    strategy="SingleRecord", accept="application/json",
                                    output_path=f"file://{output_dir.resolve()}",
                                    max_payload=TRANSFORM_MAX_PAYLOAD_MB)
    transformer.transform(f"file://{input_dir.resolve()}", content_type=TRANSFORM_CONTENT_TYPE,
                          split_type="None", job_name=name, wait=True, logs=False)


def start_transform_job(config: Config, session, model_data: str, name: str,
                        manifest_uri: str, output_uri: str, top_k: int,
                        concurrency: int | None) -> None:
    """Model + transform job over the files a manifest lists, one image per request
    (SplitType None, SingleRecord), answers under `output_uri`. Without `concurrency` the
    job asks the container's /execution-parameters."""
    serving = config.serving
    model = serving_model(config, session, model_data, name, local=False,
                          env={"DOGBREED_TOP_K": str(top_k)})
    transformer = model.transformer(
        instance_count=serving.instance_count, instance_type=serving.instance_type,
        strategy="SingleRecord", accept="application/json", output_path=output_uri,
        max_concurrent_transforms=concurrency, max_payload=TRANSFORM_MAX_PAYLOAD_MB,
        volume_kms_key=serving.volume_kms_key)
    transformer.transform(manifest_uri, data_type="ManifestFile",
                          content_type=TRANSFORM_CONTENT_TYPE, split_type="None",
                          job_name=name, wait=False, logs=False)


def wait_for_transform(session, name: str) -> dict:
    return wait_until_done(
        lambda: session.sagemaker_client.describe_transform_job(TransformJobName=name),
        "TransformJobStatus", lambda d: f"transform job {name}: {d['TransformJobStatus']}",
        ("Completed", "Failed", "Stopped"))


def describe_transform(session, name: str) -> dict | None:
    """DescribeTransformJob; None when there is no such job (any other refusal, such as
    throttling or expired credentials, is raised: taking it for "gone" would start a
    second job beside a running one)."""
    import botocore.exceptions
    try:
        return session.sagemaker_client.describe_transform_job(TransformJobName=name)
    except botocore.exceptions.ClientError as error:
        if _not_found(error):
            return None
        raise


def delete_model(session, name: str, quiet: bool = False) -> None:
    """The transform's model, once its job has ended; one that is not there is fine, and
    `quiet` says nothing about any other refusal (its creation may have been refused)."""
    import botocore.exceptions
    try:
        session.sagemaker_client.delete_model(ModelName=name)
    except botocore.exceptions.ClientError as error:
        if not (quiet or _not_found(error)):
            print(f"warning: could not delete model {name}: {short_error(error)}",
                  file=sys.stderr)


def _not_found(error) -> bool:
    message = str(error).lower()
    return (error.response.get("Error", {}).get("Code") in ("ValidationException",
                                                             "ResourceNotFound")
            and ("could not find" in message or "not found" in message
                 or "does not exist" in message))
