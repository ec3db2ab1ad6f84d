"""Our images under the real SageMaker Python SDK 2.x in local mode (Docker, no AWS)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tarfile

import pytest

from conftest import (HYPERPARAMETERS, INSTANCE_TYPE, ROLE, SERVE_IMAGE, TRAIN_IMAGE,
                      channels, new_session)
from dogbreed.metrics import parse_metrics


def _estimator(session, output, instance_count=1, **hyperparameters):
    from sagemaker.estimator import Estimator
    return Estimator(image_uri=TRAIN_IMAGE, role=ROLE, instance_count=instance_count,
                     instance_type=INSTANCE_TYPE, output_path=f"file://{output}",
                     sagemaker_session=session, base_job_name="dogbreed-local",
                     hyperparameters=dict(HYPERPARAMETERS, **hyperparameters))


def _members(archive) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar.getmembers()
                if m.isfile()}


def _fit(session, output, data, **estimator_options):
    """fit(), returning what the job printed (local mode streams the containers' logs)."""
    log = io.StringIO()
    error = None
    with contextlib.redirect_stdout(log):
        try:
            _estimator(session, output, **estimator_options).fit(channels(data), logs="All")
        except Exception as raised:  # the SDK's own error for a failed job
            error = raised
    return log.getvalue(), error


@pytest.fixture(scope="module")
def trained(sample_data, tmp_path_factory):
    """One training job, shared by the artifact and serving tests."""
    root = tmp_path_factory.mktemp("fit")
    output = root / "output"
    output.mkdir()
    log, error = _fit(new_session(root), output, sample_data, rules="ExplodingTensor:stop")
    assert error is None, log[-3000:]
    return output / "model.tar.gz", log


def test_fit_writes_the_artifact_and_learns(trained):
    archive, log = trained
    members = _members(archive)
    assert sorted(members) == ["metrics.json", "model.json", "model.safetensors"]
    description = json.loads(members["model.json"])
    assert description["num_classes"] == 5
    found = parse_metrics(log)
    assert found["epoch"] == [1, 2, 3, 4]
    assert len(found["test_accuracy"]) == 1
    # Measured 0.73-0.93 at 4 epochs; chance is 0.20 with 5 classes.
    assert found["test_accuracy"][0] >= 0.5
    assert description["metrics"]["test_accuracy"] == pytest.approx(found["test_accuracy"][0],
                                                                    abs=1e-4)


def test_the_job_output_carries_its_trace_rules_profile_and_report(trained):
    archive, log = trained
    members = _members(archive.with_name("output.tar.gz"))
    assert "success" in members
    assert any(name.startswith("data/debug/events/") for name in members)
    rules = json.loads(members["data/rules.json"])["rules"]
    assert [(r["rule"], r["status"]) for r in rules] == [("ExplodingTensor", "NoIssuesFound")]
    assert "DebuggerRule ExplodingTensor: NoIssuesFound" in log
    steps = members["data/profiler/steps.jsonl"].decode().splitlines()
    assert len(steps) == 4 * 8  # 4 epochs of 8 steps
    assert members["data/profiler/system.jsonl"].count(b"\n") >= 2
    assert "LowGPUUtilization" in members["data/profiler/profiler_rules.json"].decode()
    assert b"</html>" in members["data/report.html"]


def test_the_training_image_can_compile_kernels():
    """compile=on needs a C compiler and Python's headers in the image: Inductor builds
    a CPU kernel here as Triton builds its GPU launchers."""
    program = ("import torch; from dogbreed.training.compiling import toolchain_problem; "
               "print('toolchain', toolchain_problem()); "
               "print('compiled', torch.compile(lambda x: x.sin() + 1)(torch.zeros(3)).tolist())")
    ran = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", TRAIN_IMAGE,
                          "-c", program], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "toolchain None" in ran.stdout
    assert "compiled [1.0, 1.0, 1.0]" in ran.stdout


def test_two_instances_train_with_ddp_and_write_one_artifact(sample_data, tmp_path):
    output = tmp_path / "output"
    output.mkdir()
    log, error = _fit(new_session(tmp_path), output, sample_data, instance_count=2, epochs=2)
    assert error is None, log[-3000:]
    assert "launching 2 DDP workers (2 host(s) x 1)" in log
    assert parse_metrics(log)["epoch"] == [1, 2]  # rank 0 alone logs
    members = _members(output / "model.tar.gz")
    assert sorted(members) == ["metrics.json", "model.json", "model.safetensors"]
    assert json.loads(members["model.json"])["training"]["world_size"] == 2


def test_bad_hyperparameter_fails_the_job_with_its_reason(sample_data, tmp_path):
    output = tmp_path / "output"
    output.mkdir()
    log, error = _fit(new_session(tmp_path), output, sample_data, **{"learning-rate": 0.1})
    assert error is not None
    assert "unknown hyperparameter(s) learning-rate" in log
    failure = _members(output / "output.tar.gz").get("failure", b"").decode()
    assert "unknown hyperparameter(s) learning-rate" in failure


def test_deploy_predict_and_delete(trained, sample_data, tmp_path):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer
    archive, _ = trained
    session = new_session(tmp_path)
    model = Model(image_uri=SERVE_IMAGE, model_data=f"file://{archive}", role=ROLE,
                  sagemaker_session=session, predictor_cls=Predictor,
                  env={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    predictor = model.deploy(initial_instance_count=1, instance_type=INSTANCE_TYPE,
                             serializer=IdentitySerializer("image/jpeg"),
                             deserializer=JSONDeserializer())
    try:
        image = sorted((sample_data / "test" / "002.Afghan_hound").glob("*.jpg"))[0]
        answer = predictor.predict(image.read_bytes())
        labels = [p["label"] for p in answer["predictions"][0]]
        assert len(labels) == 5
        assert set(labels) == {"Affenpinscher", "Afghan hound", "Airedale terrier", "Akita",
                               "Alaskan malamute"}
        # Local mode's runtime client hands back the response without raising on 4xx.
        refused = session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName=predictor.endpoint_name, Body=b"not an image", ContentType="image/jpeg")
        assert refused["Body"].status == 400
        assert json.loads(refused["Body"].read()) == {
            "error": "the body is not a decodable JPEG, PNG, WebP or HEIC image"}
    finally:
        predictor.delete_model()  # needs the endpoint config, so before the endpoint
        predictor.delete_endpoint()
    listed = subprocess.run(["docker", "ps", "-q", "--filter", f"ancestor={SERVE_IMAGE}"],
                            capture_output=True, text=True).stdout.split()
    assert listed == []  # the endpoint's container is gone


def test_the_guard_refuses_a_request_to_aws():
    """Shows the proxy guard works: a real boto3 call to AWS fails at once."""
    import boto3
    import botocore.exceptions
    with pytest.raises(botocore.exceptions.ProxyConnectionError):
        boto3.client("sts").get_caller_identity()
