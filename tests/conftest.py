"""Shared fixtures: sample data made once per session, and a way to run a training job
exactly as the container does (`SAGEMAKER_BASE_DIR=DIR python -m dogbreed.train`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dogbreed.sample_data import write_sample_data
from launcher.job_dir import prepare_training_dir

# Small and fast: 64 px from scratch learns the sample data in a few epochs on 2 cores.
FAST_HYPERPARAMETERS = {"epochs": 2, "batch-size": 16, "image-size": 64, "pretrained": "none",
                        "trainable": "all", "lr": 0.001, "patience": 0}


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """5 classes x 30 images (24 train / 3 valid / 3 test), plus 2 broken files in train."""
    root = tmp_path_factory.mktemp("sample_data")
    write_sample_data(root, classes=5, images_per_class=30, seed=0)
    return root


def channels_of(data: Path, names=("train", "valid", "test")) -> dict[str, Path]:
    return {name: data / name for name in names}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_env(base_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(base_dir), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_job(base_dir: Path, hyperparameters: dict, channels: dict, timeout: float = 600,
            **env: str) -> subprocess.CompletedProcess:
    """Lay out base_dir like /opt/ml and run the training program on it to the end."""
    prepare_training_dir(base_dir, hyperparameters, channels)
    return subprocess.run([sys.executable, "-m", "dogbreed.train"], env=job_env(base_dir, **env),
                          capture_output=True, text=True, timeout=timeout)


def failure_reason(base_dir: Path) -> str:
    return (base_dir / "output" / "failure").read_text()
