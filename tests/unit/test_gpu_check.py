"""A GPU host whose driver the image's CUDA cannot use: forward-compatibility libraries
when the image has them, else a loud one-line failure (never a quiet CPU run).

There is no GPU here, so the host is described by stand-ins for what the NVIDIA runtime
puts into a container: an `nvidia-smi` on PATH that prints what the real one prints for
`--query-gpu=name,driver_version --format=csv,noheader`, device files and the kernel
module's version file."""

from __future__ import annotations

from dataclasses import replace

from conftest import fake_nvidia_smi
from dogbreed.gpu_check import (HostGpus, compat_dir, host_gpus, kernel_driver_version,
                                unusable_gpu_reason)


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


def test_the_model_server_is_told_the_gpus_torch_can_use(tmp_path):
    from dogbreed.serving.server import ServeSettings, write_mms_config
    settings = ServeSettings(port=8080, workers=2, timeout_seconds=60,
                             max_payload_bytes=6 << 20, multi_model=False, startup_timeout=60,
                             model_dir=tmp_path / "model", runtime_dir=tmp_path / "runtime")
    for gpus in (0, 4):
        written = write_mms_config(replace(settings, gpus=gpus), 20001).read_text()
        assert f"\nnumber_of_gpu={gpus}\n" in written
