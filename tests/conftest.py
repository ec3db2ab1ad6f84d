"""Shared fixtures: sample data made once per session, a way to run a training job exactly
as the container does (`SAGEMAKER_BASE_DIR=DIR python -m dogbreed.train`), the real server,
and the helpers both tiers use (`tests/unit` runs in process, `tests/functional` starts
programs)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
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


@pytest.fixture(scope="session")
def trained_model(sample_data, tmp_path_factory) -> Path:
    """The model/ folder of a short training job on the sample data (64 px)."""
    base = tmp_path_factory.mktemp("trained")
    result = run_job(base, dict(FAST_HYPERPARAMETERS, epochs=3), channels_of(sample_data))
    assert result.returncode == 0, result.stderr
    return base / "model"


class RunningServer:
    """`python -m dogbreed.serve` started for real (MMS, Java, workers) on a free port."""

    def __init__(self, base_dir: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runtime_dir = base_dir / "serve_runtime"
        self.env = dict(os.environ, SAGEMAKER_BASE_DIR=str(base_dir),
                        SAGEMAKER_BIND_TO_PORT=str(self.port), SAGEMAKER_MODEL_SERVER_WORKERS="2",
                        DOGBREED_SERVE_DIR=str(self.runtime_dir), PYTHONUNBUFFERED="1")
        self.env.update(env)
        self.log = base_dir / "serve.log"
        self.process: subprocess.Popen | None = None
        self.ping_codes: list[int] = []

    def start(self, timeout: float = 120) -> "RunningServer":
        import requests
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "dogbreed.serve"],
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                self.ping_codes.append(requests.get(f"{self.url}/ping", timeout=2).status_code)
            except requests.ConnectionError:
                self.ping_codes.append(0)
            if self.ping_codes[-1] == 200:
                return self
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def registered_model(self) -> dict:
        """How MMS itself describes the single model (its batch size, delay, workers), from
        its management API on the loopback port the serve log names."""
        import re

        import requests
        port = re.search(r"MMS on 127\.0\.0\.1:(\d+)", self.log.read_text()).group(1)
        return one_model(requests.get(f"http://127.0.0.1:{port}/models/model", timeout=10).json())

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def one_model(described):
    """MMS describes a model as an object or as a list of one, depending on the call."""
    if isinstance(described, list):
        [described] = described
    return described


def model_server_processes(runtime_dir: Path) -> list[str]:
    """Command lines of processes still running from this server's runtime folder."""
    import psutil
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if str(runtime_dir) in command:
            found.append(command)
    return found


# ---- helpers both tiers use (tests/unit, tests/functional) ----------------------------

def fake_nvidia_smi(folder: Path, output: str, exit_code: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {exit_code}\n")
    script.chmod(0o755)
    return script


def fill_torch_cache(tmp_path, *args) -> tuple[int, str]:
    """`python -m dogbreed.imagenet_weights ARGS` with TORCH_HOME under tmp_path, in
    process: (exit code, stderr)."""
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(err):
        patch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        from dogbreed.imagenet_weights import main
        code = main(list(args))
    return code, err.getvalue()


def tuning_config(**tuning):
    from launcher.config import Config
    values = {"max_jobs": 4, "max_parallel_jobs": 1,
              "ranges": {"lr": {"type": "continuous", "min": 1e-5, "max": 1e-1,
                                "scaling": "Logarithmic"}}}
    values.update(tuning)
    return Config.model_validate({"tuning": values})


def profiler_rule(folder: Path, name: str, **parameters) -> dict:
    from dogbreed.profiling.rules import evaluate_profiler_rules
    results = evaluate_profiler_rules(folder, {name: parameters})
    return next(result for result in results if result["rule"] == name)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def images_of(page: str) -> list:
    """The PNG plots inlined in a report page, each checked to be a real, large image."""
    from PIL import Image
    images = []
    for encoded in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        data = base64.b64decode(encoded, validate=True)
        assert data.startswith(PNG_SIGNATURE)
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.width >= 600 and image.height >= 200
        images.append(image)
    return images


def headings_of(page: str) -> list[str]:
    return re.findall(r"<h2>([^<]+)</h2>", page)


def rules_in(path: Path) -> dict[str, str]:
    return {rule["rule"]: rule["status"] for rule in json.loads(path.read_text())["rules"]}
