"""Spot interruption: SIGTERM saves a checkpoint, a restarted job carries on from it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch

from conftest import FAST_HYPERPARAMETERS, channels_of, job_env, run_job
from dogbreed.metrics import parse_metrics
from launcher.job_dir import prepare_training_dir

EPOCHS = 3


def interrupt_mid_epoch(base_dir, epoch: int, step: int, **env) -> list[str]:
    """Run the job in base_dir; SIGTERM it once rank 0 reports `step` of `epoch` done
    (a progress line after every step); return what it printed and the checkpoint."""
    process = subprocess.Popen([sys.executable, "-m", "dogbreed.train"],
                               env=job_env(base_dir, DOGBREED_PROGRESS_SECONDS="0", **env),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(f"progress: epoch {epoch}/{EPOCHS} step {step}/"):
            process.send_signal(signal.SIGTERM)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, "".join(lines)
    assert f"stopped: SIGTERM during epoch {epoch}" in "".join(lines)
    return lines, torch.load(base_dir / "checkpoints" / "checkpoint.pt", weights_only=True)


def assert_resumed_mid_epoch(base_dir, first_lines: list[str], saved: dict, second) -> None:
    """Interrupted in epoch 2 with steps done; the restart trained epochs 2 and 3 only, and
    epoch 2 still covered every training image exactly once."""
    assert saved["epoch"] == 2 and saved["sums"]["step"] >= 2
    assert [row["epoch"] for row in saved["history"]] == [1]
    assert second.returncode == 0, second.stdout + second.stderr
    assert parse_metrics(second.stdout)["epoch"] == [2, 3]  # epoch 1 was not trained again
    description = json.loads((base_dir / "model" / "model.json").read_text())
    assert description["training"]["resumed_from"] == {"epoch": 2, "step": saved["sums"]["step"]}
    history = json.loads((base_dir / "model" / "metrics.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["train_images"] for row in history] == [120, 120, 120]
    assert round(history[0]["valid_loss"], 4) == parse_metrics("".join(first_lines))["valid_loss"][0]
    assert (base_dir / "output" / "success").is_file()


def assert_same_training(resumed_dir, uninterrupted_dir, exact_train_sums: bool = True) -> None:
    """A resumed job ends where the uninterrupted one did: the same weights, byte for byte,
    and the same metrics (all but the timing). Under DDP the epoch's train sums are added
    in another order across ranks, so train_loss may differ in its last bits there."""
    weights = "model/model.safetensors"
    assert (resumed_dir / weights).read_bytes() == (uninterrupted_dir / weights).read_bytes()

    def history(folder):
        rows = json.loads((folder / "model" / "metrics.json").read_text())["epochs"]
        return [{k: v for k, v in row.items() if k != "images_per_sec"} for row in rows]

    resumed, whole = history(resumed_dir), history(uninterrupted_dir)
    if not exact_train_sums:
        for row in resumed + whole:
            row["train_loss"] = round(row["train_loss"], 12)
    assert resumed == whole
    final = [{k: v for k, v in json.loads((folder / "model" / "model.json").read_text())[
        "metrics"].items() if k != "images_per_sec"} for folder in (resumed_dir, uninterrupted_dir)]
    assert final[0] == final[1]


def uninterrupted_job(data, folder, **hyperparameters):
    """The same job as the interrupted ones, run to the end without a stop."""
    result = run_job(folder, dict(FAST_HYPERPARAMETERS, epochs=EPOCHS, **hyperparameters),
                     channels_of(data))
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def uninterrupted(sample_data, tmp_path_factory):
    """data-pipeline=auto: the cached store, augmented on the device."""
    return uninterrupted_job(sample_data, tmp_path_factory.mktemp("uninterrupted"))


@pytest.fixture(scope="module")
def uninterrupted_pil(sample_data, tmp_path_factory):
    return uninterrupted_job(sample_data, tmp_path_factory.mktemp("uninterrupted_pil"),
                             **{"data-pipeline": "pil"})


@pytest.mark.parametrize("pipeline", ["auto", "pil"])
def test_sigterm_mid_epoch_then_restart_completes_from_the_checkpoint(sample_data, tmp_path,
                                                                      request, pipeline):
    """Both data pipelines resume mid-epoch with the batches the uninterrupted job had."""
    uninterrupted = request.getfixturevalue(
        "uninterrupted" if pipeline == "auto" else "uninterrupted_pil")
    hyperparameters = dict(FAST_HYPERPARAMETERS, epochs=EPOCHS, **{"data-pipeline": pipeline})
    channels = channels_of(sample_data)
    prepare_training_dir(tmp_path, hyperparameters, channels)
    first_lines, saved = interrupt_mid_epoch(tmp_path, epoch=2, step=3)
    assert (tmp_path / "output" / "failure").read_text().startswith("interrupted: SIGTERM")
    assert not (tmp_path / "output" / "success").exists()
    (tmp_path / "output" / "failure").unlink()
    second = run_job(tmp_path, hyperparameters, channels)
    assert_resumed_mid_epoch(tmp_path, first_lines, saved, second)
    assert_same_training(tmp_path, uninterrupted)


def test_a_features_job_stopped_before_its_first_step_resumes_as_if_never_stopped(
        sample_data, tmp_path):
    """The head's epochs take milliseconds here, too little to aim a signal at: SIGTERM
    goes while the stores are decoded, the job stops after step 1 of epoch 1, and the
    restart computes the same features again and ends with the uninterrupted job's
    weights and metrics."""
    hyperparameters = dict(FAST_HYPERPARAMETERS, epochs=EPOCHS, trainable="fc")
    channels = channels_of(sample_data)
    prepare_training_dir(tmp_path, hyperparameters, channels)
    process = subprocess.Popen([sys.executable, "-m", "dogbreed.train"],
                               env=job_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("decoded 120 images of channel train once"):
            process.send_signal(signal.SIGTERM)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, "".join(lines)
    assert "stopped: SIGTERM during epoch 1 after step 1;" in "".join(lines)
    saved = torch.load(tmp_path / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["sums"]["step"]) == (1, 1)
    (tmp_path / "output" / "failure").unlink()
    second = run_job(tmp_path, hyperparameters, channels)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "data pipeline features" in second.stdout
    description = json.loads((tmp_path / "model" / "model.json").read_text())
    assert description["training"]["resumed_from"] == {"epoch": 1, "step": 1}
    whole = uninterrupted_job(sample_data, tmp_path / "uninterrupted", trainable="fc")
    assert_same_training(tmp_path, whole)


def test_sigterm_between_epochs_then_restart_ends_bit_identical(sample_data, tmp_path,
                                                                uninterrupted):
    """SIGTERM as epoch 1's line appears: the job stops after epoch 1 or early in epoch 2,
    whichever it reaches first; either way the restart ends where the uninterrupted job
    did."""
    hyperparameters = dict(FAST_HYPERPARAMETERS, epochs=EPOCHS)
    channels = channels_of(sample_data)
    prepare_training_dir(tmp_path, hyperparameters, channels)
    process = subprocess.Popen([sys.executable, "-m", "dogbreed.train"],
                               env=job_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line.startswith("epoch=1 "):
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stdout.read()
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, rest
    assert "stopped: SIGTERM" in rest
    (tmp_path / "output" / "failure").unlink()
    second = run_job(tmp_path, hyperparameters, channels)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_same_training(tmp_path, uninterrupted)


def test_a_checkpoint_of_another_job_is_refused(sample_data, tmp_path):
    channels = channels_of(sample_data)
    first = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1), channels)
    assert first.returncode == 0, first.stderr
    second = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1, lr=0.01), channels)
    assert second.returncode == 1
    reason = (tmp_path / "output" / "failure").read_text()
    assert "other hyperparameters (lr: 0.001 -> 0.01)" in reason


def test_deterministic_algorithms_run_on_the_cpu_and_give_the_same_weights(sample_data,
                                                                          tmp_path,
                                                                          uninterrupted):
    """deterministic=on (for GPUs, where cuDNN's fastest kernels are not deterministic)
    costs nothing on the CPU and changes nothing there: same seed, same bytes."""
    hyperparameters = dict(FAST_HYPERPARAMETERS, epochs=EPOCHS, deterministic="on")
    result = run_job(tmp_path, hyperparameters, channels_of(sample_data))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == \
        (uninterrupted / "model" / "model.safetensors").read_bytes()
