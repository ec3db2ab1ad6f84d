"""Spot interruption: SIGTERM saves a checkpoint, a restarted job carries on from it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import torch

from conftest import FAST_HYPERPARAMETERS, channels_of, job_env, run_job
from dogbreed.data import EpochSampler
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


def test_sigterm_mid_epoch_then_restart_completes_from_the_checkpoint(sample_data, tmp_path):
    hyperparameters = dict(FAST_HYPERPARAMETERS, epochs=EPOCHS)
    channels = channels_of(sample_data)
    prepare_training_dir(tmp_path, hyperparameters, channels)
    first_lines, saved = interrupt_mid_epoch(tmp_path, epoch=2, step=3)
    assert (tmp_path / "output" / "failure").read_text().startswith("interrupted: SIGTERM")
    assert not (tmp_path / "output" / "success").exists()
    (tmp_path / "output" / "failure").unlink()
    second = run_job(tmp_path, hyperparameters, channels)
    assert_resumed_mid_epoch(tmp_path, first_lines, saved, second)


def test_a_checkpoint_of_another_job_is_refused(sample_data, tmp_path):
    channels = channels_of(sample_data)
    first = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1), channels)
    assert first.returncode == 0, first.stderr
    second = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1, lr=0.01), channels)
    assert second.returncode == 1
    reason = (tmp_path / "output" / "failure").read_text()
    assert "other hyperparameters (lr: 0.001 -> 0.01)" in reason


def test_epoch_sampler_resumes_mid_epoch_with_the_same_remaining_order():
    whole = EpochSampler(50, shuffle=True, seed=7)
    whole.set_epoch(3)
    resumed = EpochSampler(50, shuffle=True, seed=7)
    resumed.set_epoch(3, start=20)
    assert list(resumed) == list(whole)[20:]
    whole.set_epoch(4)
    assert list(whole) != list(resumed)  # another epoch, another order


def test_epoch_sampler_shards_cover_the_data_with_equal_step_counts():
    shards = []
    for rank in range(3):
        sampler = EpochSampler(10, shuffle=True, seed=0, rank=rank, world_size=3)
        sampler.set_epoch(1)
        shards.append(list(sampler))
    assert {len(shard) for shard in shards} == {4}
    assert set().union(*shards) == set(range(10))
    evaluation = [list(EpochSampler(10, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(evaluation, [])) == list(range(10))  # no padding: exact metrics


def test_an_fp16_job_resumes_a_checkpoint_saved_without_a_loss_scaler():
    """A bf16, fp32 or CPU job saves the state of a disabled GradScaler (empty); an fp16
    job resuming it (amp=auto on a GPU without bf16) must not fail on it."""
    from dogbreed.checkpoint import restore_scaler
    saved = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    assert saved == {}
    fp16 = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    try:
        fp16.load_state_dict(saved)
        raise AssertionError("torch accepted an empty scaler state: the guard is moot")
    except RuntimeError:
        pass
    restore_scaler(fp16, saved)
    assert fp16.get_scale() == 1024.0  # a fresh scale, as a new fp16 job starts with
    # And the other way round: a saved fp16 scale carries on.
    trained = torch.amp.GradScaler("cpu", enabled=True, init_scale=256.0)
    restore_scaler(fp16, trained.state_dict())
    assert fp16.get_scale() == 256.0
