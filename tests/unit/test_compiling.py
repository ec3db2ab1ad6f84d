"""The `compile` hyperparameter: what auto picks, and what on refuses before training."""

from __future__ import annotations

import pytest
import torch

from dogbreed.training.compiling import (AUTO_MIN_IMAGES, CompileRefused, choose_compile,
                                         compiled, original, toolchain_problem)

GPU = torch.device("cuda", 0)  # a device object only: nothing runs on it
CPU = torch.device("cpu")


@pytest.fixture
def no_compiler(monkeypatch):
    """A machine without gcc, clang or $CC (the lookup itself is the real one)."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")


def test_off_never_compiles():
    assert choose_compile("off", GPU, 10 * AUTO_MIN_IMAGES) == (False, "compile=off")


def test_auto_stays_eager_on_the_cpu_however_long_the_job():
    decided, why = choose_compile("auto", CPU, 10 * AUTO_MIN_IMAGES)
    assert not decided and "CPU" in why


def test_auto_compiles_on_a_gpu_only_a_job_long_enough_to_pay_back():
    short, why = choose_compile("auto", GPU, 6_680 * 10)
    assert not short and "66,800 training images per worker are too few" in why
    assert choose_compile("auto", GPU, AUTO_MIN_IMAGES)[0] is (toolchain_problem() is None)


def test_auto_stays_eager_where_the_debugger_hooks_modules():
    decided, why = choose_compile("auto", GPU, AUTO_MIN_IMAGES, ("losses", "relu_input"))
    assert not decided and "relu_input" in why


def test_auto_stays_eager_without_a_compiler(no_compiler):
    decided, why = choose_compile("auto", GPU, AUTO_MIN_IMAGES)
    assert not decided and "no C compiler" in why


def test_on_refuses_hooked_collections_with_what_to_change():
    with pytest.raises(CompileRefused, match=r"relu_input hook the model's modules, and a "
                       r"compiled model never calls those hooks; use compile=off"):
        choose_compile("on", CPU, 100, ("relu_input",))


def test_on_refuses_a_machine_without_a_compiler(no_compiler):
    assert toolchain_problem() == "no C compiler (gcc or clang, or $CC) is installed"
    with pytest.raises(CompileRefused, match=r"no C compiler.*g\+\+ and python3-dev"):
        choose_compile("on", GPU, 100)


def test_on_compiles_wherever_the_toolchain_is(monkeypatch):
    if toolchain_problem() is not None:
        pytest.skip(f"this machine cannot compile: {toolchain_problem()}")
    assert choose_compile("on", CPU, 100) == (True, "compile=on")


def test_the_compiled_module_keeps_the_original_for_state_dicts():
    module = torch.nn.Linear(3, 2)
    wrapped = compiled(module)
    assert wrapped is not module and original(wrapped) is module
    assert original(module) is module
