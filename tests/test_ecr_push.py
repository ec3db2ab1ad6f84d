"""`make push` refuses early and clearly: no Docker, no engine, no image, no credentials.

The Docker CLI is replaced by a recording stand-in on PATH, because the states under test
(no docker, an engine that is down) cannot be produced with the real engine in the same
run; nothing else is faked, and the stand-in proves nothing was tagged or pushed."""

from __future__ import annotations

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
