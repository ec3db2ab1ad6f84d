"""The sagemaker backend against moto in server mode (`AWS_ENDPOINT_URL`): the requests the
launcher sends to SageMaker, S3 and the runtime are read back from moto's request recorder
and checked field by field. moto trains and serves nothing, so its fake results (job
status, best tuning job, endpoint answers) are never what a test asserts on."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import requests

from dogbreed.metrics import METRIC_DEFINITIONS
from moto_server import Moto

REPO = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"
ROLE = "arn:aws:iam::123456789012:role/DogbreedTests"
TRAIN_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogbreed-train:v1"
SERVE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogbreed-serve:v1"
CONFIG = f"""
workdir = "runs"
[aws]
region = "us-east-1"
role_arn = "{ROLE}"
bucket = "dogbreed-tests"
prefix = "proj"
[images]
train = "{TRAIN_IMAGE}"
serve = "{SERVE_IMAGE}"
[data]
local_dir = "data"
[training]
instance_type = "ml.g5.2xlarge"
instance_count = 2
volume_size_gb = 80
max_run_seconds = 7200
spot = true
max_wait_seconds = 10800
[training.hyperparameters]
epochs = 6
trainable = "layer4"
[tuning]
objective = "valid_loss"
direction = "Minimize"
strategy = "Bayesian"
early_stopping = "Auto"
max_jobs = 6
max_parallel_jobs = 3
[tuning.ranges]
lr = {{ type = "continuous", min = 0.0001, max = 0.01, scaling = "Logarithmic" }}
batch-size = {{ type = "categorical", values = [32, 64] }}
patience = {{ type = "integer", min = 1, max = 4, scaling = "Linear" }}
[serving]
instance_type = "ml.m5.2xlarge"
instance_count = 2
workers = 2
"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = Moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def project(moto, tmp_path_factory):
    root = tmp_path_factory.mktemp("sagemaker_project")
    (root / "launcher.toml").write_text(CONFIG)
    sdk_config = root / "sdk.yaml"
    sdk_config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                          "      TelemetryOptOut: true\n")
    return root


def aws_env(moto: Moto, root: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(root / "none"), AWS_SHARED_CREDENTIALS_FILE=str(root / "none"),
               AWS_EC2_METADATA_DISABLED="true", LAUNCHER_POLL_SECONDS="0.1", AWS_MAX_ATTEMPTS="1",
               SAGEMAKER_USER_CONFIG_OVERRIDE=str(root / "sdk.yaml"), PYTHONPATH=str(REPO),
               # Anything not sent to moto goes to a closed port and fails.
               HTTP_PROXY=NOWHERE, HTTPS_PROXY=NOWHERE, http_proxy=NOWHERE, https_proxy=NOWHERE,
               NO_PROXY="localhost,127.0.0.1", no_proxy="localhost,127.0.0.1")
    return env


def launcher(moto: Moto, root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "launcher", *args], cwd=root,
                            env=aws_env(moto, root), capture_output=True, text=True, timeout=300)
    return result


def boto(moto: Moto, service: str):
    import boto3
    return boto3.client(service, endpoint_url=moto.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def uploaded(moto, project):
    boto(moto, "s3").create_bucket(Bucket="dogbreed-tests")
    result = launcher(moto, project, "data", "--synthetic", "--classes", "2",
                      "--images-per-class", "10", "--dest", "data", "--upload")
    assert result.returncode == 0, result.stderr
    return result


def test_data_uploads_the_channels(moto, uploaded, project):
    keys = [item["Key"] for item in boto(moto, "s3").list_objects_v2(
        Bucket="dogbreed-tests", Prefix="proj/data/")["Contents"]]
    local = [p for p in (project / "data").rglob("*") if p.is_file() and p.parent.parent.name
             in ("train", "valid", "test")]
    assert len(keys) == len(local)
    assert "proj/data/train/001.Affenpinscher/Affenpinscher_00001.jpg" in keys
    # Run again (an interrupted upload, say): what is there already is not sent again.
    puts = len([e for e in moto.requests() if e["method"] == "PUT"])
    again = launcher(moto, project, "data", "--dest", "data", "--upload")
    assert again.returncode == 0, again.stderr
    assert "already holds the data" in again.stdout and "uploaded 0 file(s)" in again.stdout
    assert len([e for e in moto.requests() if e["method"] == "PUT"]) == puts


def test_train_sends_the_training_job(moto, uploaded, project):
    result = launcher(moto, project, "train", "--backend", "sagemaker", "--set", "lr=0.002",
                      "--name", "dogbreed-train-1", "--rule", "ExplodingTensor:stop",
                      "--rule", "Overfit", "--rule-parameter", "Overfit.patience=2",
                      "--debugger-collections", "losses,gradients", "--profiler-window", "5:3")
    assert result.returncode == 0, result.stderr
    sent = moto.one("CreateTrainingJob")
    assert sent["TrainingJobName"] == "dogbreed-train-1"
    assert sent["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    assert sent["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    # Debugging and profiling travel as hyperparameters: the job does them itself.
    assert sent["HyperParameters"] == {
        "epochs": "6", "trainable": "layer4", "lr": "0.002",
        "rules": "ExplodingTensor:stop,Overfit", "rule-parameters": "Overfit.patience=2",
        "debugger-collections": "losses,gradients", "profiler-start-step": "5",
        "profiler-num-steps": "3"}
    assert sent["RoleArn"] == ROLE
    assert sent["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2,
                                      "VolumeSizeInGB": 80}
    assert sent["EnableManagedSpotTraining"] is True
    assert sent["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200,
                                         "MaxWaitTimeInSeconds": 10800}
    # Each job its own prefix: a restarted spot job finds its checkpoint and no other.
    assert sent["CheckpointConfig"]["S3Uri"] == \
        "s3://dogbreed-tests/proj/checkpoints/dogbreed-train-1"
    assert sent["OutputDataConfig"]["S3OutputPath"] == "s3://dogbreed-tests/proj/jobs"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in sent["InputDataConfig"]}
    assert channels == {name: f"s3://dogbreed-tests/proj/data/{name}"
                        for name in ("train", "valid", "test")}
    # The closed Debugger service is not asked for.
    assert "DebugHookConfig" not in sent and "DebugRuleConfigurations" not in sent
    assert sent.get("ProfilerConfig", {}).get("DisableProfiler", True) is True
    # The image needs no network: isolated by default; no VPC or keys unless configured.
    assert sent["EnableNetworkIsolation"] is True
    assert not sent.get("EnableInterContainerTrafficEncryption")
    assert "VpcConfig" not in sent and "VolumeKmsKeyId" not in sent["ResourceConfig"]
    assert "KmsKeyId" not in sent["OutputDataConfig"]
    assert "the model is at s3://" in result.stdout


def test_tune_sends_ranges_objective_strategy_and_early_stopping(moto, uploaded, project):
    result = launcher(moto, project, "tune", "--backend", "sagemaker", "--name", "dogbreed-t1")
    assert result.returncode == 0, result.stdout + result.stderr
    sent = moto.one("CreateHyperParameterTuningJob")
    config = sent["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize",
                                                          "MetricName": "valid_loss"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6,
                                        "MaxParallelTrainingJobs": 3}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [{"Name": "lr", "MinValue": "0.0001",
                                                    "MaxValue": "0.01",
                                                    "ScalingType": "Logarithmic"}]
    assert ranges["IntegerParameterRanges"] == [{"Name": "patience", "MinValue": "1",
                                                 "MaxValue": "4", "ScalingType": "Linear"}]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch-size",
                                                     "Values": ["32", "64"]}]
    definition = sent["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    # Static hyperparameters as strings; the tuned ones are left to the tuner.
    static = {k: v for k, v in definition["StaticHyperParameters"].items()
              if not k.startswith("_") and not k.startswith("sagemaker_")}
    assert static == {"epochs": "6", "trainable": "layer4"}
    assert definition["EnableManagedSpotTraining"] is True
    assert "CheckpointConfig" not in definition  # the jobs would share one prefix
    # The SDK sends the tuning form of the resource config.
    resources = definition["HyperParameterTuningResourceConfig"]
    assert (resources["InstanceType"], resources["InstanceCount"], resources["VolumeSizeInGB"]) \
        == ("ml.g5.2xlarge", 2, 80)
    # moto cannot list a tuning job's training jobs: said, not hidden.
    assert "cannot list the tuning job's training jobs" in result.stderr
    assert (project / "runs" / "tuning" / "dogbreed-t1" / "best.json").is_file()


def test_hyperband_sends_its_strategy_config(moto, uploaded, project):
    result = launcher(moto, project, "tune", "--backend", "sagemaker", "--name", "dogbreed-hb",
                      "--strategy", "Hyperband", "--early-stopping", "Off", "--no-wait")
    assert result.returncode == 0, result.stderr
    sent = [entry["json"] for entry in moto.requests("CreateHyperParameterTuningJob")
            if entry["json"]["HyperParameterTuningJobName"] == "dogbreed-hb"][0]
    config = sent["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Hyperband"
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1,
                                                                    "MaxResource": 6}}
    assert config["TrainingJobEarlyStoppingType"] == "Off"


@pytest.fixture(scope="module")
def deployed(moto, uploaded, project):
    result = launcher(moto, project, "deploy", "--backend", "sagemaker", "--model",
                      "s3://dogbreed-tests/proj/jobs/dogbreed-train-1/output/model.tar.gz",
                      "--name", "dogbreed-ep")
    assert result.returncode == 0, result.stderr
    return result


def test_deploy_sends_model_endpoint_config_and_endpoint(moto, deployed):
    model = moto.one("CreateModel")
    assert model["ModelName"] == "dogbreed-ep"
    assert model["PrimaryContainer"]["Image"] == SERVE_IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == \
        "s3://dogbreed-tests/proj/jobs/dogbreed-train-1/output/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    assert model["ExecutionRoleArn"] == ROLE
    assert model["EnableNetworkIsolation"] is True and "VpcConfig" not in model
    endpoint_config = moto.one("CreateEndpointConfig")
    assert "KmsKeyId" not in endpoint_config
    variant = endpoint_config["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == \
        ("dogbreed-ep", "ml.m5.2xlarge", 2)
    assert "InferenceAmiVersion" not in variant  # a CPU instance: no driver to choose
    endpoint = moto.one("CreateEndpoint")
    assert (endpoint["EndpointName"], endpoint["EndpointConfigName"]) == ("dogbreed-ep",) * 2
    assert "endpoint dogbreed-ep is in service" in deployed.stdout


def test_a_gpu_endpoint_gets_an_ami_whose_driver_runs_the_images_cuda(moto, uploaded,
                                                                      project):
    """GPU endpoints default to drivers 470-550; the images' CUDA 13 needs 580."""
    (project / "gpu.toml").write_text(CONFIG.replace(
        'instance_type = "ml.m5.2xlarge"', 'instance_type = "ml.g4dn.xlarge"').replace(
        'workdir = "runs"', 'workdir = "runs-gpu"'))  # its own state: not predict's endpoint
    result = launcher(moto, project, "deploy", "--backend", "sagemaker", "--config", "gpu.toml",
                      "--model", "s3://dogbreed-tests/m.tar.gz", "--name", "dogbreed-gpu")
    assert result.returncode == 0, result.stderr
    sent = [entry["json"] for entry in moto.requests("CreateEndpointConfig")
            if entry["json"]["EndpointConfigName"] == "dogbreed-gpu"][0]
    variant = sent["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InferenceAmiVersion"]) == \
        ("ml.g4dn.xlarge", "al2023-ami-sagemaker-inference-gpu-4-1")
    (project / "bad-ami.toml").write_text(CONFIG.replace(
        "workers = 2", 'workers = 2\ninference_ami_version = "AL2 GPU"'))
    refused = launcher(moto, project, "deploy", "--backend", "sagemaker", "--config",
                       "bad-ami.toml", "--model", "s3://dogbreed-tests/m.tar.gz")
    assert refused.returncode == 1 and "inference_ami_version" in refused.stderr


SUBNETS = ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a69788"]
GROUPS = ["sg-0123456789abcdef0"]
VOLUME_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OUTPUT_KEY = "alias/dogbreed-output"
ENDPOINT_KEY = "alias/dogbreed-endpoint"
LOCKED_DOWN = CONFIG.replace('workdir = "runs"', 'workdir = "runs-locked"').replace(
    'instance_type = "ml.g5.2xlarge"', f"""instance_type = "ml.p3.2xlarge"
subnets = {json.dumps(SUBNETS)}
security_group_ids = {json.dumps(GROUPS)}
volume_kms_key = "{VOLUME_KEY}"
output_kms_key = "{OUTPUT_KEY}"
encrypt_inter_container_traffic = true""").replace('workers = 2', f"""workers = 2
network_isolation = false
subnets = {json.dumps(SUBNETS[:1])}
security_group_ids = {json.dumps(GROUPS)}
volume_kms_key = "{ENDPOINT_KEY}"
""")


def test_the_security_options_reach_every_request(moto, uploaded, project):
    """What a security team sets in the config arrives in CreateTrainingJob,
    CreateHyperParameterTuningJob, CreateModel and CreateEndpointConfig, field by field."""
    (project / "locked.toml").write_text(LOCKED_DOWN)
    for command in (["train", "--name", "dogbreed-locked"],
                    ["tune", "--name", "dogbreed-locked-t", "--no-wait"],
                    ["deploy", "--model", "s3://dogbreed-tests/m.tar.gz", "--name",
                     "dogbreed-locked-ep"]):
        result = launcher(moto, project, *command, "--backend", "sagemaker", "--config",
                          "locked.toml")
        assert result.returncode == 0, result.stderr
    vpc = {"Subnets": SUBNETS, "SecurityGroupIds": GROUPS}

    def sent(operation: str, name_field: str, name: str) -> dict:
        return [entry["json"] for entry in moto.requests(operation)
                if entry["json"][name_field] == name][0]

    job = sent("CreateTrainingJob", "TrainingJobName", "dogbreed-locked")
    tuning = sent("CreateHyperParameterTuningJob", "HyperParameterTuningJobName",
                  "dogbreed-locked-t")["TrainingJobDefinition"]
    for definition, resources in ((job, job["ResourceConfig"]),
                                  (tuning, tuning["HyperParameterTuningResourceConfig"])):
        assert definition["EnableNetworkIsolation"] is True
        assert definition["EnableInterContainerTrafficEncryption"] is True
        assert definition["VpcConfig"] == vpc
        assert resources["VolumeKmsKeyId"] == VOLUME_KEY
        assert definition["OutputDataConfig"]["KmsKeyId"] == OUTPUT_KEY
    model = sent("CreateModel", "ModelName", "dogbreed-locked-ep")
    assert not model.get("EnableNetworkIsolation")  # off, as configured for the endpoint
    assert model["VpcConfig"] == {"Subnets": SUBNETS[:1], "SecurityGroupIds": GROUPS}
    endpoint_config = sent("CreateEndpointConfig", "EndpointConfigName", "dogbreed-locked-ep")
    assert endpoint_config["KmsKeyId"] == ENDPOINT_KEY


@pytest.mark.parametrize("setting, message", [
    ('subnets = ["subnet-0a1b2c3d"]', "subnets and security_group_ids make one VPC config"),
    ('subnets = ["vpc-0a1b2c3d"]\nsecurity_group_ids = ["sg-0a1b2c3d"]',
     "'vpc-0a1b2c3d' is not a subnet id"),
    ('subnets = ["subnet-0a1b2c3d"]\nsecurity_group_ids = ["0a1b2c3d"]',
     "'0a1b2c3d' is not a security group id"),
    ('volume_kms_key = "alias/mine"', "'alias/mine' is not a KMS key id or key ARN"),
    ('output_kms_key = "my key"', "'my key' is not a KMS key id, key ARN, alias"),
    (f'volume_kms_key = "{VOLUME_KEY}"',
     "volume_kms_key cannot be used with ml.g5.2xlarge: its local NVMe storage"),
    ('network_isolation = "yes"', "training.network_isolation"),
])
def test_a_bad_security_option_is_refused_before_any_aws_call(moto, uploaded, project,
                                                              setting, message):
    (project / "bad-security.toml").write_text(CONFIG.replace(
        "volume_size_gb = 80", f"volume_size_gb = 80\n{setting}"))
    before = len(moto.requests())
    result = launcher(moto, project, "train", "--backend", "sagemaker", "--config",
                      "bad-security.toml")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(moto.requests()) == before  # not even S3 was asked


def test_predict_sends_invoke_endpoint(moto, deployed, project):
    image = sorted((project / "data" / "test" / "001.Affenpinscher").glob("*.jpg"))[0]
    result = launcher(moto, project, "predict", str(image), "--top-k", "2")
    sent = [entry for entry in moto.requests() if "/endpoints/" in entry["url"]]
    assert len(sent) == 1  # AWS_MAX_ATTEMPTS=1: no retries
    assert sent[0]["url"].endswith("/endpoints/dogbreed-ep/invocations")
    assert sent[0]["headers"]["Content-Type"] == "image/jpeg"
    assert sent[0]["headers"]["Accept"] == "application/json"
    assert sent[0]["headers"]["X-Amzn-Sagemaker-Custom-Attributes"] == "top_k=2"
    assert sent[0]["raw"] == image.read_bytes()
    # moto 5.2.5's InvokeEndpoint fails on any non-UTF-8 body (an image) with a 500: the
    # launcher reports it in one line.
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: InvokeEndpoint dogbreed-ep failed: An error "
                                     "occurred (500) when calling the InvokeEndpoint operation "
                                     "(reached max retries: 0)")


def test_report_fetches_the_model_and_output_from_s3(moto, uploaded, project, trained_model):
    archive = project / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in trained_model.iterdir():
            tar.add(item, arcname=item.name)
    # SageMaker's output.tar.gz: output/data's files at its root (trace, profiler).
    output_archive = project / "output.tar.gz"
    with tarfile.open(output_archive, "w:gz") as tar:
        for item in (trained_model.parent / "output" / "data").iterdir():
            tar.add(item, arcname=item.name)
    # What SageMaker would have written at the end of the job. Not recorded: the recorder
    # interleaves the lines of a multipart upload's parallel parts.
    requests.post(f"{moto.url}/moto-api/recorder/stop-recording").raise_for_status()
    for local in (archive, output_archive):
        boto(moto, "s3").upload_file(str(local), "dogbreed-tests",
                                     f"proj/jobs/dogbreed-train-1/output/{local.name}")
    requests.post(f"{moto.url}/moto-api/recorder/start-recording").raise_for_status()
    result = launcher(moto, project, "report", "--backend", "sagemaker", "--job",
                      "dogbreed-train-1")
    assert result.returncode == 0, result.stderr
    assert "fetching s3://dogbreed-tests/proj/jobs/dogbreed-train-1/output/output.tar.gz" in \
        result.stdout
    page = (project / "runs" / "reports" / "dogbreed-train-1.html").read_text()
    assert "data:image/png;base64," in page
    for heading in ("Loss and accuracy", "Step time", "System utilisation"):
        assert f">{heading}</h2>" in page, heading


def test_cleanup_deletes_what_deploy_created(moto, deployed, project):
    result = launcher(moto, project, "cleanup")
    assert result.returncode == 0, result.stderr
    assert moto.one("DeleteEndpoint") == {"EndpointName": "dogbreed-ep"}
    assert moto.one("DeleteEndpointConfig") == {"EndpointConfigName": "dogbreed-ep"}
    assert moto.one("DeleteModel") == {"ModelName": "dogbreed-ep"}
    assert json.loads((project / "runs" / "state.json").read_text())["endpoints"] == {}


def test_missing_s3_data_and_a_bad_name_are_refused_before_any_call(moto, uploaded, project):
    (project / "empty.toml").write_text(CONFIG.replace('prefix = "proj"', 'prefix = "empty"'))
    before = len(moto.requests("CreateTrainingJob"))
    result = launcher(moto, project, "train", "--backend", "sagemaker", "--config", "empty.toml")
    assert result.returncode == 1
    assert "no train or valid data under s3://dogbreed-tests/empty/data" in result.stderr
    assert len(moto.requests("CreateTrainingJob")) == before  # nothing started
    for options, message in (
            (["--rule", "Vanishing"], "unknown rule 'Vanishing'"),
            (["--rule", "Overfit:page"], "rule Overfit has action 'page'"),
            (["--profiler-window", "5"], "--profiler-window '5': use START:STEPS"),
            (["--rule-parameter", "Overfit.ratio=1"], "rule Overfit has no parameter 'ratio'")):
        result = launcher(moto, project, "train", "--backend", "sagemaker", *options)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    assert len(moto.requests("CreateTrainingJob")) == before
    result = launcher(moto, project, "tune", "--backend", "sagemaker", "--name",
                      "x" * 33)
    assert result.returncode == 1
    assert "tuning job name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': use at most 32" in result.stderr


def test_an_image_pushed_to_another_region_is_refused_before_any_job(moto, uploaded, project):
    """SageMaker pulls only from ECR in its own region; `make push` once used the default
    region while jobs used aws.region."""
    (project / "elsewhere.toml").write_text(CONFIG.replace('region = "us-east-1"',
                                                           'region = "eu-west-1"'))
    before = {target: len(moto.requests(target)) for target in
              ("CreateTrainingJob", "CreateHyperParameterTuningJob", "CreateModel")}
    for command in (["train"], ["tune"], ["deploy", "--model", "s3://dogbreed-tests/m.tar.gz"]):
        result = launcher(moto, project, *command, "--backend", "sagemaker", "--config",
                          "elsewhere.toml")
        assert result.returncode == 1, command
        kind = "serve" if command[0] == "deploy" else "train"
        assert (f"the {kind} image {SERVE_IMAGE if kind == 'serve' else TRAIN_IMAGE} is in "
                "us-east-1, but jobs run in eu-west-1: push it there (`make push "
                "REGION=eu-west-1`)") in result.stderr, result.stderr
    assert {target: len(moto.requests(target)) for target in before} == before


class FakeInstanceMetadata:
    """EC2's instance metadata service (IMDSv2) on loopback, handing out an instance
    role's credentials, as on an EC2 instance or a SageMaker notebook."""

    ACCESS_KEY = "ASIAINSTANCEROLE"

    def __init__(self):
        import http.server
        import threading
        outer = self
        self.credential_requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):  # the session token
                self._answer(b"imds-token")

            def do_GET(self):
                base = "/latest/meta-data/iam/security-credentials/"
                if self.path == base:
                    self._answer(b"DogbreedInstanceRole")
                elif self.path == base + "DogbreedInstanceRole":
                    outer.credential_requests += 1
                    self._answer(json.dumps({
                        "Code": "Success", "Type": "AWS-HMAC",
                        "AccessKeyId": outer.ACCESS_KEY, "SecretAccessKey": "secret",
                        "Token": "token", "Expiration": "2099-01-01T00:00:00Z"}).encode())
                else:
                    self.send_response(404)
                    self.end_headers()

            def _answer(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_instance_role_credentials_keep_working_after_the_first_sagemaker_session(
        moto, project):
    """The launcher once switched the metadata service off for the whole process when it
    made its first SageMaker session, so the next boto3 session (waiting for a tuning job,
    `report`) found no credentials on EC2. The real backend leaves the environment as it
    found it."""
    metadata = FakeInstanceMetadata()
    env = aws_env(moto, project)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"):
        env.pop(key)
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = metadata.url
    script = textwrap.dedent("""
        import json, os
        from pathlib import Path
        from launcher.config import load_config
        from launcher.sagemaker_sdk import aws_session, sagemaker_session
        config = load_config("launcher.toml")
        before = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        sagemaker_session(config, Path("runs"))
        after = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        key = aws_session(config).get_credentials().get_frozen_credentials().access_key
        print(json.dumps({"same_environment": before == after, "access_key": key}))
    """)
    try:
        result = subprocess.run([sys.executable, "-c", script], cwd=project, env=env,
                                capture_output=True, text=True, timeout=120)
    finally:
        metadata.server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"same_environment": True, "access_key": FakeInstanceMetadata.ACCESS_KEY}
    assert metadata.credential_requests >= 2  # both sessions asked the instance role


# ---- transform: a Batch Transform job over a local folder --------------------------------

TRANSFORM_MODEL = "s3://dogbreed-tests/proj/jobs/dogbreed-train-1/output/model.tar.gz"


def sent_where(moto: Moto, operation: str, key: str, value: str) -> list[dict]:
    return [entry["json"] for entry in moto.requests(operation)
            if entry["json"].get(key) == value]


def s3_text(moto: Moto, uri: str) -> str:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return boto(moto, "s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def put_answer(moto: Moto, key: str, label: str) -> None:
    """What a transform job writes for one image."""
    boto(moto, "s3").put_object(Bucket="dogbreed-tests", Key=key, Body=json.dumps(
        {"predictions": [[{"label": label, "probability": 0.9}]]}).encode())


def test_transform_sends_the_job_and_a_second_run_sends_only_the_rest(moto, uploaded,
                                                                     project):
    """moto runs no job (it 'completes' with no output): the request is read back field by
    field, and the answers a job would have left in S3 are put there by the test."""
    photos = project / "photos"
    (photos / "sub").mkdir(parents=True)
    samples = sorted((project / "data").rglob("*.jpg"))
    shutil.copy(samples[0], photos / "a.jpg")
    shutil.copy(samples[1], photos / "sub" / "b.jpg")
    shutil.copy(samples[2], photos / "sub" / "c.jpg")
    (photos / "notes.txt").write_text("not an image")
    common = ["transform", "photos", "--backend", "sagemaker", "--model", TRANSFORM_MODEL,
              "--output", "answers", "--top-k", "3"]
    first = launcher(moto, project, *common, "--concurrency", "8")
    assert first.returncode == 1, first.stderr  # moto's job wrote no answer
    assert "4 file(s): 0 scored now, 0 already done, 4 failed" in first.stdout
    [job] = moto.requests("CreateTransformJob")
    job = job["json"]
    name = job["TransformJobName"]
    assert name.startswith("dogbreed-transform-") and job["ModelName"] == name
    [model] = sent_where(moto, "CreateModel", "ModelName", name)
    assert model["PrimaryContainer"]["Image"] == SERVE_IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == TRANSFORM_MODEL
    # A transform's requests carry no custom attributes: the top-k travels in the model.
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2", "DOGBREED_TOP_K": "3"}
    source = job["TransformInput"]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile"
    base = source["S3Uri"].split("manifests/")[0]
    assert base.startswith("s3://dogbreed-tests/proj/transforms/photos-")
    assert source["S3Uri"] == f"{base}manifests/{name}.json"
    assert job["TransformInput"]["ContentType"] == "application/x-image"
    assert job["TransformInput"]["SplitType"] == "None"
    assert job["TransformOutput"] == {"S3OutputPath": f"{base}output/",
                                      "Accept": "application/json"}
    assert job["TransformResources"] == {"InstanceType": "ml.m5.2xlarge", "InstanceCount": 2}
    assert job["BatchStrategy"] == "SingleRecord"
    assert job["MaxPayloadInMB"] == 6
    assert job["MaxConcurrentTransforms"] == 8
    # The manifest lists the images (not the text file), uploaded under input/.
    assert json.loads(s3_text(moto, source["S3Uri"])) == [
        {"prefix": f"{base}input/"}, "a.jpg", "sub/b.jpg", "sub/c.jpg"]
    bucket_key = f"{base}input/sub/b.jpg".removeprefix("s3://dogbreed-tests/")
    assert boto(moto, "s3").get_object(Bucket="dogbreed-tests", Key=bucket_key)[
        "Body"].read() == (photos / "sub" / "b.jpg").read_bytes()
    rows = {row["file"]: row for row in csv.DictReader(open(project / "answers" /
                                                            "predictions.csv"))}
    assert rows["notes.txt"]["status"] == "failed"
    assert "not a JPEG, PNG, WebP or HEIC image" in rows["notes.txt"]["error"]
    assert rows["a.jpg"]["error"] == f"transform job {name} completed without an answer for it"
    assert sent_where(moto, "DeleteModel", "ModelName", name) == [{"ModelName": name}]

    # The job answered a.jpg and sub/c.jpg (and left a damaged answer for sub/b.jpg)
    # before it stopped; then sub/c.jpg was replaced by another photo of the same name.
    output = base.removeprefix("s3://dogbreed-tests/") + "output/"
    put_answer(moto, output + "a.jpg.out", "Akita")
    put_answer(moto, output + "sub/c.jpg.out", "Collie")
    boto(moto, "s3").put_object(Bucket="dogbreed-tests", Key=output + "sub/b.jpg.out",
                                Body=b'{"predictions": [[{"lab')
    shutil.copy(samples[3], photos / "sub" / "c.jpg")
    puts = [e for e in moto.requests() if e["method"] == "PUT"]
    second = launcher(moto, project, *common)
    assert second.returncode == 1, second.stderr
    assert "1 answer(s) fetched from an earlier job" in second.stdout
    assert "4 file(s): 1 scored now, 0 already done, 3 failed" in second.stdout, second.stdout
    jobs = [e["json"] for e in moto.requests("CreateTransformJob")]
    assert len(jobs) == 2 and "MaxConcurrentTransforms" not in jobs[1]  # the server says
    manifest = jobs[1]["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert json.loads(s3_text(moto, manifest)) == [{"prefix": f"{base}input/"}, "sub/b.jpg",
                                                   "sub/c.jpg"]
    # Only the replaced photo was sent again, and the manifest.
    new_puts = [e for e in moto.requests() if e["method"] == "PUT"][len(puts):]
    folder = base.removeprefix("s3://dogbreed-tests/")
    assert sorted(e["url"].split("?")[0].split(folder)[-1] for e in new_puts) == [
        "input/sub/c.jpg", f"manifests/{jobs[1]['TransformJobName']}.json"]
    assert json.loads((project / "answers" / "a.jpg.out").read_text())["predictions"][0][0][
        "label"] == "Akita"
    assert not (project / "answers" / "sub" / "b.jpg.out").exists()

    # Every image answered in S3: nothing is started, the answers come home. A job an
    # earlier run recorded and that has ended since gets its model deleted.
    put_answer(moto, output + "sub/b.jpg.out", "Beagle")
    put_answer(moto, output + "sub/c.jpg.out", "Collie")
    ended = jobs[1]["TransformJobName"]
    (project / "answers" / "transform-job.json").write_text(json.dumps({"job": ended}))
    models = len(moto.requests("CreateModel"))
    third = launcher(moto, project, *common)
    assert len(moto.requests("CreateTransformJob")) == 2
    assert len(moto.requests("CreateModel")) == models
    assert len(sent_where(moto, "DeleteModel", "ModelName", ended)) == 2
    assert not (project / "answers" / "transform-job.json").exists()
    rows = {row["file"]: row for row in csv.DictReader(open(project / "answers" /
                                                            "predictions.csv"))}
    assert {file: row["label_1"] for file, row in rows.items() if row["status"] == "ok"} == {
        "a.jpg": "Akita", "sub/b.jpg": "Beagle", "sub/c.jpg": "Collie"}
    assert third.returncode == 1  # notes.txt is still not an image
    assert "4 file(s): 2 scored now, 1 already done, 1 failed" in third.stdout


@pytest.mark.parametrize("options, message", [
    (["--model", "model.tar.gz"], "reads a model.tar.gz in S3, not model.tar.gz"),
    (["--model", TRANSFORM_MODEL, "--concurrency", "17"],
     "--concurrency 17: a transform job takes at most 16 requests in flight per instance"),
])
def test_transform_refuses_bad_input_before_any_aws_call(moto, uploaded, project, tmp_path,
                                                         options, message):
    photo = sorted((project / "data" / "test").rglob("*.jpg"))[0]
    (tmp_path / "in").mkdir()
    shutil.copy(photo, tmp_path / "in" / "x.jpg")
    before = len(moto.requests())
    result = launcher(moto, project, "transform", str(tmp_path / "in"), "--backend",
                      "sagemaker", "--output", str(tmp_path / "out"), *options)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(moto.requests()) == before


def test_evaluate_scores_the_split_through_a_transform_job(moto, uploaded, project,
                                                           trained_model):
    """evaluate --backend sagemaker: the model's class list from its model.tar.gz in S3,
    the split through a transform job, the metrics from the answers it left in S3 (put
    there by the test, since moto runs nothing: each photo answered with its own breed)."""
    archive = project / "evaluated.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in trained_model.iterdir():
            tar.add(item, arcname=item.name)
    boto(moto, "s3").upload_file(str(archive), "dogbreed-tests", "proj/models/ev/model.tar.gz")
    command = ["evaluate", "--backend", "sagemaker", "--model",
               "s3://dogbreed-tests/proj/models/ev/model.tar.gz", "--out", "ev"]
    first = launcher(moto, project, *command)
    assert first.returncode == 1
    assert "no photo of data/test was scored" in first.stderr
    job = moto.requests("CreateTransformJob")[-1]["json"]
    source = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    listed = json.loads(s3_text(moto, source))
    photos = sorted(path.relative_to(project / "data" / "test").as_posix()
                    for path in (project / "data" / "test").rglob("*.jpg"))
    assert listed[1:] == photos
    output = job["TransformOutput"]["S3OutputPath"].removeprefix("s3://dogbreed-tests/")
    description = json.loads((trained_model / "model.json").read_text())
    for photo in photos:
        truth = description["class_folders"].index(photo.split("/")[0])
        boto(moto, "s3").put_object(
            Bucket="dogbreed-tests", Key=f"{output}{photo}.out", Body=json.dumps(
                {"predictions": [[{"label": description["class_names"][truth],
                                   "class_id": truth, "probability": 0.9}]]}).encode())
    jobs = len(moto.requests("CreateTransformJob"))
    second = launcher(moto, project, *command)
    assert second.returncode == 0, second.stderr
    assert len(moto.requests("CreateTransformJob")) == jobs  # every photo had its answer
    evaluation = json.loads((project / "ev" / "evaluation.json").read_text())
    assert evaluation["images"] == len(photos)
    assert evaluation["top1_accuracy"] == 1.0
    assert f"{len(photos)} answer(s) fetched from an earlier job" in second.stdout
