"""Whether the training step runs through `torch.compile`, and the compiling itself.

Compiling ResNet50's forward and backward took 117 s cold on the 2-core CPU (7.5-10 s
with Inductor's cache warm); on a GPU it is not measured yet. On a GPU it should then save a
share of each step's time, so `auto` compiles only where that can pay back: on a GPU, for a
job that trains on at least `AUTO_MIN_IMAGES` images per worker. On the CPU it gains nothing
measurable (the compiled step at 0.96x and 1.07x the eager one, within the noise, against a
cold compile of about two minutes: benchmarks/README.md).
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import torch

# Break-even, estimated (no GPU measurement yet; benchmarks/train_throughput.py --compile
# prints the measured one): 60 s of compile against a step 1.25x faster (PyTorch 2.0's
# announcement: 1.3-2x for training on A100s) at 3,000 img/s eager is paid back after
# 60 / (1/3000 - 1/3750) = 900,000 images. The real data set's 6,680 images x 10 epochs is
# 67,000: auto leaves such jobs eager.
AUTO_MIN_IMAGES = 1_000_000

# Debugger collections that hook modules: hooks added to a compiled model never run.
HOOKED_COLLECTIONS = ("relu_input",)


class CompileRefused(ValueError):
    """compile=on where it cannot work; the message says what to change."""


def toolchain_problem() -> str | None:
    """What Triton (GPU: a C compiler) and Inductor (CPU: a C++ compiler) miss to build
    their kernels, or None; both also need Python's headers."""
    if not (os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")):
        return "no C compiler (gcc or clang, or $CC) is installed"
    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")):
        return "no C++ compiler (g++ or clang++, or $CXX) is installed"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"Python's headers are missing ({headers})"
    return None


def choose_compile(setting: str, device: torch.device, images_per_worker: int,
                   collections: tuple[str, ...] | list[str] = ()) -> tuple[bool, str]:
    """(compile?, why) for the `compile` hyperparameter; CompileRefused for `on` where it
    cannot work (before any data is decoded)."""
    hooked = sorted(set(HOOKED_COLLECTIONS) & set(collections))
    if setting == "off":
        return False, "compile=off"
    if setting == "on":
        if hooked:
            raise CompileRefused(
                f"compile=on: the debugger collection(s) {', '.join(hooked)} hook the model's "
                "modules, and a compiled model never calls those hooks; use compile=off, or "
                "leave those collections (and the rules that read them) out")
        problem = toolchain_problem()
        if problem:
            raise CompileRefused(
                f"compile=on: {problem}, and torch.compile builds its kernels with them; use "
                "compile=off, or a training image with g++ and python3-dev installed")
        return True, "compile=on"
    if device.type != "cuda":
        return False, "compile=auto: off on the CPU, where it does not pay back"
    if hooked:
        return False, f"compile=auto: off, the debugger hooks {', '.join(hooked)}"
    if images_per_worker < AUTO_MIN_IMAGES:
        return False, (f"compile=auto: off, {images_per_worker:,} training images per worker "
                       f"are too few to pay back the compile (from {AUTO_MIN_IMAGES:,})")
    problem = toolchain_problem()
    if problem:
        return False, f"compile=auto: off, {problem}"
    return True, f"compile=auto: on, {images_per_worker:,} training images per worker"


def compiled(module: torch.nn.Module) -> torch.nn.Module:
    """The module the training loop steps, compiled for fixed shapes: a full batch and the
    epoch's last one are the only two, so each is compiled once and no dynamic-shape
    kernel is traded for it. State dicts are read from the original module, never this."""
    return torch.compile(module, dynamic=False)


def original(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a compiled one (itself otherwise)."""
    return getattr(module, "_orig_mod", module)
