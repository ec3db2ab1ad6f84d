"""A GPU host whose driver the image's CUDA cannot use: forward-compatibility libraries
when the image has them, else a loud one-line failure (never a quiet CPU run).

There is no GPU here, so the host is described by stand-ins for what the NVIDIA runtime
puts into a container: an `nvidia-smi` on PATH that prints what the real one prints for
`--query-gpu=name,driver_version --format=csv,noheader`, device files and the kernel
module's version file."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import FAST_HYPERPARAMETERS, channels_of, free_port, run_job
from dogbreed.gpu_check import (HostGpus, compat_dir, host_gpus, kernel_driver_version,
                                torch_cuda_version, unusable_gpu_reason)

REPO = Path(__file__).resolve().parents[1]
A10G_535 = "NVIDIA A10G, 535.104.05"


def fake_nvidia_smi(folder: Path, output: str, exit_code: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {exit_code}\n")
    script.chmod(0o755)
    return script


def test_nvidia_smi_output_gives_count_names_and_driver(tmp_path):
    smi = fake_nvidia_smi(tmp_path, "\n".join(["NVIDIA A100-SXM4-40GB, 470.182.03"] * 8))
    found = host_gpus(str(smi))
    assert found == HostGpus(8, "470.182.03", ("NVIDIA A100-SXM4-40GB",) * 8)
    assert found.driver_major == 470


def test_device_files_and_the_kernel_module_version_when_nvidia_smi_fails(tmp_path):
    smi = fake_nvidia_smi(tmp_path / "bin", "NVIDIA-SMI has failed", exit_code=9)
    devices = tmp_path / "dev"
    devices.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (devices / name).touch()
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug "
                       "19 01:15:15 UTC 2023\nGCC version:  gcc version 7.3.1\n")
    found = host_gpus(str(smi), device_glob=str(devices / "nvidia*"), driver_file=version)
    assert found == HostGpus(2, "535.104.05")
    assert kernel_driver_version(tmp_path / "missing") is None


def test_a_cpu_host_or_a_usable_gpu_is_no_problem():
    assert unusable_gpu_reason(False, HostGpus(0, None), "13.0") is None
    assert unusable_gpu_reason(True, HostGpus(1, "580.65.06"), "13.0") is None


def test_an_old_driver_names_the_driver_found_the_one_needed_and_the_fix():
    reason = unusable_gpu_reason(False, HostGpus(1, "535.104.05", ("NVIDIA A10G",)), "13.0")
    assert reason.startswith("the host has 1 GPU(s) (NVIDIA A10G, driver 535.104.05) but "
                             "torch's CUDA 13.0 needs driver >= 580")
    assert "inference_ami_version" in reason and "TORCH_INDEX_URL" in reason
    # A new enough driver that torch still cannot use: the runtime, not the driver.
    other = unusable_gpu_reason(False, HostGpus(1, "580.65.06"), "13.0")
    assert "NVIDIA runtime" in other and "CUDA_VISIBLE_DEVICES" in other


def test_compat_libraries_only_for_an_older_driver_and_only_when_the_image_has_them(tmp_path):
    folder = tmp_path / "compat"
    folder.mkdir()
    old, new = HostGpus(1, "535.104.05"), HostGpus(1, "580.65.06")
    assert compat_dir(old, "13.0", folder) is None  # none in the image
    (folder / "libcuda.so.580.65.06").touch()
    assert compat_dir(old, "13.0", folder) == folder
    assert compat_dir(new, "13.0", folder) is None
    assert compat_dir(HostGpus(0, None), "13.0", folder) is None
    assert compat_dir(old, "12.8", folder) is None  # CUDA 12 runs on 535


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


def test_the_model_server_is_told_the_gpus_torch_can_use(tmp_path):
    from dogbreed.serve import ServeSettings, write_mms_config
    settings = ServeSettings(port=8080, workers=2, timeout_seconds=60,
                             max_payload_bytes=6 << 20, multi_model=False, startup_timeout=60,
                             model_dir=tmp_path / "model", runtime_dir=tmp_path / "runtime")
    for gpus in (0, 4):
        written = write_mms_config(replace(settings, gpus=gpus), 20001).read_text()
        assert f"\nnumber_of_gpu={gpus}\n" in written
