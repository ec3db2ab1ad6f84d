"""The GPU check where it runs: the images' entrypoints, a training job and serve on a GPU
host whose driver the image's CUDA cannot use (a loud one-line failure, never a quiet CPU
run), and the torch CUDA version read without importing torch. The host is described by
stand-ins (see unit/test_gpu_check.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST_HYPERPARAMETERS, channels_of, fake_nvidia_smi, free_port, run_job
from dogbreed.gpu_check import torch_cuda_version

REPO = Path(__file__).resolve().parents[2]


A10G_535 = "NVIDIA A10G, 535.104.05"


def test_the_torch_cuda_version_is_read_without_importing_torch():
    probe = subprocess.run([sys.executable, "-c", "import sys\nfrom dogbreed.gpu_check import "
                            "torch_cuda_version\nprint(torch_cuda_version(), 'torch' in "
                            "sys.modules)"], capture_output=True, text=True, check=True)
    import torch
    assert probe.stdout.split() == [str(torch.version.cuda), "False"]
    assert torch_cuda_version() == torch.version.cuda


@pytest.mark.parametrize("driver, expected", [("535.104.05", "COMPAT"), ("580.65.06", "")])
def test_the_entrypoint_puts_the_compat_libraries_first_when_the_driver_is_old(
        tmp_path, driver, expected):
    """docker/entrypoints/train as the image runs it; `python -m dogbreed.train` is
    replaced by a script that prints the LD_LIBRARY_PATH it was started with."""
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, f"NVIDIA A10G, {driver}")
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nif [ "$2" = dogbreed.train ]; then echo "started with '
                      f'LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; exit 0; fi\nexec {sys.executable} '
                      '"$@"\n')
    python.chmod(0o755)
    compat = tmp_path / "compat"
    compat.mkdir()
    (compat / "libcuda.so.1").touch()
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", LD_LIBRARY_PATH="/opt/x",
               DOGBREED_CUDA_COMPAT_DIR=str(compat), PYTHONPATH=str(REPO / "container_src"))
    started = subprocess.run(["sh", str(REPO / "docker" / "entrypoints" / "train")], env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    prefix = f"{compat}:" if expected else ""
    assert started.stdout.strip() == f"started with LD_LIBRARY_PATH={prefix}/opt/x"
    if expected:
        assert "host driver 535.104.05 is older than CUDA" in started.stderr


def test_a_training_job_on_a_gpu_host_it_cannot_use_fails_with_the_reason(sample_data,
                                                                          tmp_path):
    """The job once trained on the CPU of a GPU instance without a word."""
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, "\n".join([A10G_535] * 4))
    result = run_job(tmp_path / "job", FAST_HYPERPARAMETERS, channels_of(sample_data),
                     PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 1
    failure = (tmp_path / "job" / "output" / "failure").read_text()
    assert failure.startswith("the host has 4 GPU(s) (NVIDIA A10G, driver 535.104.05) but "
                              "torch's CUDA 13.0 needs driver >= 580")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "job" / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("multi_model", [False, True])
def test_serve_on_a_gpu_host_it_cannot_use_exits_with_the_reason(trained_model, tmp_path,
                                                                 multi_model):
    """An endpoint once answered from the CPU of a GPU instance without a word."""
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, "\n".join([A10G_535] * 4))
    if multi_model:
        (tmp_path / "models").mkdir()
    else:
        (tmp_path / "model").symlink_to(trained_model)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               SAGEMAKER_BASE_DIR=str(tmp_path), SAGEMAKER_BIND_TO_PORT=str(free_port()),
               SAGEMAKER_MULTI_MODEL=str(multi_model).lower())
    result = subprocess.run([sys.executable, "-m", "dogbreed.serve"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "ERROR the host has 4 GPU(s) (NVIDIA A10G, driver 535.104.05) but torch's CUDA 13.0 "
        "needs driver >= 580, and the image's CUDA forward-compatibility libraries could not "
        "bridge it (none in the image, or a GPU that does not support them): use an instance "
        "type or AMI with a newer driver (endpoints: serving.inference_ami_version), or build "
        "the images with older CUDA wheels "
        "(make build TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128)")
    assert "serving on port" not in result.stdout
