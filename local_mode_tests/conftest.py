"""Local-mode fixtures: the real SageMaker Python SDK 2.x driving our images through the
Docker engine, with no AWS call (dummy credentials, telemetry off, no metadata service).

Needs: a running Docker engine, docker-compose, and the images from `make build`
(LOCAL_MODE_TRAIN_IMAGE / LOCAL_MODE_SERVE_IMAGE override the names). Set
LOCAL_MODE_INSTANCE_TYPE=local_gpu on a machine with an NVIDIA GPU, its container
runtime and compose v2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TRAIN_IMAGE = os.environ.get("LOCAL_MODE_TRAIN_IMAGE", "dogbreed-train:latest")
SERVE_IMAGE = os.environ.get("LOCAL_MODE_SERVE_IMAGE", "dogbreed-serve:latest")
INSTANCE_TYPE = os.environ.get("LOCAL_MODE_INSTANCE_TYPE", "local")
ROLE = "arn:aws:iam::123456789012:role/DogbreedLocalModeTests"
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there
# The top of a launcher config for the local backend: our images, jobs under runs/.
LAUNCHER_CONFIG = f'workdir = "runs"\n[images]\ntrain = "{TRAIN_IMAGE}"\nserve = "{SERVE_IMAGE}"\n'
HYPERPARAMETERS = {"epochs": 4, "batch-size": 16, "image-size": 64, "pretrained": "none",
                   "trainable": "all", "lr": 0.001, "patience": 0}

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


@pytest.fixture(scope="session", autouse=True)
def offline_sagemaker(tmp_path_factory):
    """The variables that keep the SDK off AWS (see ENVIRONMENT.md), for every test."""
    config = tmp_path_factory.mktemp("sdk") / "config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                      "      TelemetryOptOut: true\n")
    values = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "local-mode-tests",
              "AWS_SECRET_ACCESS_KEY": "local-mode-tests", "AWS_EC2_METADATA_DISABLED": "true",
              "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
              "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
              # Any request for a host other than this machine goes to a closed port and
              # fails the test: the proof that nothing reaches for AWS.
              "HTTP_PROXY": NOWHERE, "HTTPS_PROXY": NOWHERE, "http_proxy": NOWHERE,
              "https_proxy": NOWHERE, "NO_PROXY": "localhost,127.0.0.1",
              "no_proxy": "localhost,127.0.0.1"}
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    yield
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def images_present():
    for image in (TRAIN_IMAGE, SERVE_IMAGE):
        found = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        if found.returncode != 0:
            pytest.fail(f"image {image} not found: run `make build` (offline: "
                        "BASE_IMAGE=dogbreed-test-base:bookworm IMAGENET_WEIGHTS=skip)")


@pytest.fixture(scope="session", autouse=True)
def local_network():
    """The one `sagemaker-local` network, before the first job: CI's Docker engine starts
    without it, and parallel jobs would each create one (see launcher.docker_network)."""
    from launcher.docker_network import ensure_local_network
    ensure_local_network()


def new_session(folder: Path):
    """A LocalSession with its own container root and a free serving port."""
    from launcher.docker_network import ensure_local_network
    from sagemaker.local import LocalSession
    ensure_local_network()  # a test before may have removed it
    session = LocalSession()
    root = folder / "container_root"
    root.mkdir(exist_ok=True)
    session.config = {"local": {"local_code": True, "serving_port": free_port(),
                                "container_root": str(root)}}
    return session


@pytest.fixture(autouse=True)
def remove_containers():
    """Local mode never removes its containers."""
    yield
    for image in (TRAIN_IMAGE, SERVE_IMAGE):
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"ancestor={image}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    from dogbreed.sample_data import write_sample_data
    root = tmp_path_factory.mktemp("sample_data")
    write_sample_data(root, classes=5, images_per_class=30, seed=0)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def channels(data: Path) -> dict[str, str]:
    return {name: f"file://{data / name}" for name in ("train", "valid", "test")}

