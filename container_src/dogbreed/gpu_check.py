"""GPUs the host has, and whether this image's CUDA can use them.

The images carry torch's CUDA 13 wheels, which need an NVIDIA driver >= 580. SageMaker
hosts may run older drivers (AWS documents 470 to 550 as defaults for GPU endpoints; it
does not document training hosts'). With an older driver torch quietly reports no GPU and
a job would train on the CPU of a GPU instance, billed at GPU prices. So:

1. At container start (the entrypoints, before Python imports torch), `compat-dir`
   prints the CUDA forward-compatibility library folder when the host's driver is older
   than the wheels need and the image carries that folder, as AWS's own containers do.
   The loader reads LD_LIBRARY_PATH once, at process start: hence a shell step.
2. After torch is imported, `unusable_gpu_reason` says why, in one line, when the host
   shows GPUs that torch cannot use: the training job fails with it and `serve` exits.

No torch import at module level: the entrypoint runs it before every start.

    python -m dogbreed.gpu_check compat-dir    # prints a folder or nothing
    python -m dogbreed.gpu_check usable        # GPUs torch can use, or exit 1 with why
    python -m dogbreed.gpu_check report        # what was found, for a person
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

COMPAT_DIR = Path(os.environ.get("DOGBREED_CUDA_COMPAT_DIR", "/usr/local/cuda/compat"))
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
# The oldest driver each CUDA major release runs on (NVIDIA's CUDA release notes, Linux:
# 13.0 needs 580.65.06; 12.x runs from 525.60.13 on through minor-version compatibility).
MINIMUM_DRIVER = {13: 580, 12: 525, 11: 450}


@dataclass(frozen=True)
class HostGpus:
    count: int
    driver: str | None  # "535.104.05"
    names: tuple[str, ...] = ()

    @property
    def driver_major(self) -> int | None:
        return int(self.driver.split(".")[0]) if self.driver else None

    def describe(self) -> str:
        kinds = ", ".join(sorted(set(self.names))) or "NVIDIA GPU"
        return (f"{self.count} GPU(s) ({kinds}, driver {self.driver or 'version unknown'})")


def host_gpus(nvidia_smi: str | None = None, device_glob: str = "/dev/nvidia[0-9]*",
              driver_file: Path = DRIVER_VERSION_FILE) -> HostGpus:
    """What the host exposes to this container: nvidia-smi when it runs, else the device
    files and the kernel module's version file (what the NVIDIA runtime mounts)."""
    smi = nvidia_smi or shutil.which("nvidia-smi")
    if smi:
        try:
            listed = subprocess.run([smi, "--query-gpu=name,driver_version",
                                     "--format=csv,noheader"], capture_output=True,
                                    text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            listed = None
        if listed is not None and listed.returncode == 0:
            rows = [[part.strip() for part in line.split(",")]
                    for line in listed.stdout.splitlines() if line.strip()]
            if rows:
                return HostGpus(len(rows), rows[0][-1], tuple(row[0] for row in rows))
    devices = [path for path in glob.glob(device_glob) if re.search(r"nvidia\d+$", path)]
    return HostGpus(len(devices), kernel_driver_version(driver_file) if devices else None)


def kernel_driver_version(path: Path = DRIVER_VERSION_FILE) -> str | None:
    """`NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ...`"""
    try:
        found = re.search(r"Kernel Module\s+(\d+(?:\.\d+)+)", path.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def torch_cuda_version() -> str | None:
    """torch's CUDA version ("13.0"), read from its version file without importing torch
    (the import takes seconds and would initialise what LD_LIBRARY_PATH must set first)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        found = re.search(r"^cuda\b.*=\s*['\"](\d+\.\d+)['\"]", version_file.read_text(),
                          re.MULTILINE)
    except OSError:
        return None
    return found.group(1) if found else None


def minimum_driver(cuda_version: str | None) -> int | None:
    if not cuda_version:
        return None
    return MINIMUM_DRIVER.get(int(cuda_version.split(".")[0]))


def compat_dir(gpus: HostGpus, cuda_version: str | None,
               folder: Path = COMPAT_DIR) -> Path | None:
    """The forward-compatibility libraries to load instead of the host's libcuda: only
    when the host's driver is older than CUDA needs and the image carries them."""
    needed = minimum_driver(cuda_version)
    if gpus.count == 0 or needed is None or gpus.driver_major is None:
        return None
    if gpus.driver_major >= needed or not any(folder.glob("libcuda.so*")):
        return None
    return folder


def unusable_gpu_reason(cuda_available: bool, gpus: HostGpus,
                        cuda_version: str | None) -> str | None:
    """One line saying what to fix when the host has GPUs that torch cannot use; None when
    torch sees them, or when there are none (a CPU instance)."""
    if cuda_available or gpus.count == 0:
        return None
    if cuda_version is None:
        return (f"the host has {gpus.describe()} but this torch build has no CUDA: rebuild "
                "the images with CUDA wheels")
    needed = minimum_driver(cuda_version)
    driver = gpus.driver_major
    if needed and driver is not None and driver < needed:
        return (f"the host has {gpus.describe()} but torch's CUDA {cuda_version} needs driver "
                f">= {needed}, and the image's CUDA forward-compatibility libraries could not "
                "bridge it (none in the image, or a GPU that does not support them): use an "
                "instance type or AMI with a newer driver (endpoints: serving."
                "inference_ami_version), or build the images with older CUDA wheels "
                "(make build TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128)")
    return (f"the host has {gpus.describe()} but torch cannot use them (CUDA {cuda_version}, "
            "torch.cuda.is_available() is False): check that the container runs with the "
            "NVIDIA runtime and that CUDA_VISIBLE_DEVICES is not empty")


class GpuUnusable(RuntimeError):
    """The host has GPUs this process cannot use; the message says what to fix."""


def require_usable_gpus(toolkit_gpu_count: int = 0) -> None:
    """Raise GpuUnusable rather than run on the CPU of a GPU host. `toolkit_gpu_count`:
    the training toolkit's own count, one more way the host shows its GPUs."""
    import torch
    gpus = host_gpus()
    if gpus.count == 0 and toolkit_gpu_count > 0:
        gpus = HostGpus(toolkit_gpu_count, kernel_driver_version())
    reason = unusable_gpu_reason(torch.cuda.is_available(), gpus, torch.version.cuda)
    if reason:
        raise GpuUnusable(reason)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "report"
    gpus = host_gpus()
    cuda = torch_cuda_version()
    if command == "compat-dir":
        folder = compat_dir(gpus, cuda)
        if folder is not None:
            print(folder)
            print(f"host driver {gpus.driver} is older than CUDA {cuda} needs "
                  f"(>= {minimum_driver(cuda)}): using the forward-compatibility libraries "
                  f"in {folder}", file=sys.stderr)
        return 0
    if command == "usable":
        try:
            require_usable_gpus()
        except GpuUnusable as error:
            print(error, file=sys.stderr)
            return 1
        import torch
        print(torch.cuda.device_count())
        return 0
    if command == "report":
        print(f"host: {gpus.describe() if gpus.count else 'no NVIDIA GPU'}; torch CUDA: "
              f"{cuda or 'none'} (needs driver >= {minimum_driver(cuda) or '-'})")
        return 0
    print("usage: python -m dogbreed.gpu_check [compat-dir|usable|report]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
