"""`make push` refuses early and clearly: no Docker, no engine, no image, no credentials.

The Docker CLI is replaced by a recording stand-in on PATH, because the states under test
(no docker, an engine that is down) cannot be produced with the real engine in the same
run; nothing else is faked, and the stand-in proves nothing was tagged or pushed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _run(tmp_path, docker_script: str | None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker_calls"
    if docker_script is not None:
        docker = bin_dir / "docker"
        docker.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n{docker_script}\n")
        docker.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_DEFAULT_REGION": "eu-west-1", "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-m", "launcher.ecr_push", "--tag", "abc123"],
                            env=env, capture_output=True, text=True, cwd=os.getcwd())
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return result, recorded


@pytest.mark.parametrize("docker_script, message", [
    (None, "no docker command: install Docker first"),
    ('[ "$1" = info ] && exit 1; exit 0', "the Docker engine is not running"),
    ('[ "$1" = image ] && exit 1; exit 0', "image dogbreed-train:abc123 not found: run `make build`"),
    ("exit 0", "no AWS credentials: configure a profile"),
])
def test_push_refuses_before_doing_anything(tmp_path, docker_script, message):
    result, calls = _run(tmp_path, docker_script)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not [call for call in calls if call.split()[0] in ("tag", "push", "login")]
    assert not (tmp_path / "build" / "images.json").exists()


DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def moto(tmp_path):
    from moto_server import Moto
    (tmp_path / "moto").mkdir()
    server = Moto(tmp_path / "moto")
    yield server
    server.stop()


def _push_to_moto(tmp_path, moto, media_type: str, config_region: str):
    """The whole `make push` against moto's ECR: boto3 and the CLI are real; the Docker
    CLI is the recording stand-in (moto has no registry to push layers to), so the
    manifest its push would have written is put into ECR first, with `media_type`."""
    import boto3
    (tmp_path / "launcher.toml").write_text(f'[aws]\nregion = "{config_region}"\n')
    ecr = boto3.client("ecr", endpoint_url=moto.url, region_name=config_region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    for name in ("dogbreed-train", "dogbreed-serve"):
        ecr.create_repository(repositoryName=name)
        manifest = {"schemaVersion": 2, "mediaType": media_type,
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "size": 7, "digest": "sha256:" + "c" * 64},
                    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                "size": 9, "digest": "sha256:" + name[-5:].ljust(64, "0")}]}
        ecr.put_image(repositoryName=name, imageManifest=json.dumps(manifest),
                      imageTag="abc123")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'calls'}\nexit 0\n")
    (bin_dir / "docker").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto.url,
           "PYTHONPATH": os.getcwd(), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    return subprocess.run([sys.executable, "-m", "launcher.ecr_push", "--tag", "abc123"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)


def test_push_goes_to_the_configured_region_and_records_the_uris(tmp_path, moto):
    result = _push_to_moto(tmp_path, moto, DOCKER_V2, config_region="eu-west-1")
    assert result.returncode == 0, result.stderr
    pushed = json.loads((tmp_path / "build" / "images.json").read_text())
    # The config's region, not AWS_DEFAULT_REGION (us-east-1): jobs run there.
    assert pushed["train"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-train:abc123"
    assert pushed["serve"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-serve:abc123"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert f"push {pushed['train']}" in calls


def test_push_refuses_an_oci_manifest_that_sagemaker_would_reject(tmp_path, moto):
    result = _push_to_moto(tmp_path, moto, OCI_INDEX, config_region="eu-west-1")
    assert result.returncode == 1
    assert (f"ECR holds dogbreed-train:abc123 as {OCI_INDEX}, which SageMaker refuses"
            in result.stderr)
    assert "--provenance=false" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "build" / "images.json").exists()
