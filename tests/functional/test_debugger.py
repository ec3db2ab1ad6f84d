"""The debugger hook: traces in smdebug's format, written by real training jobs, read back
with smdebug 1.0.34's own reader in an isolated venv (its old pins cannot live beside ours)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST_HYPERPARAMETERS, channels_of, run_job
from dogbreed.debugging.trace import iter_trace, reduction_name

REPO = Path(__file__).resolve().parents[2]


def test_the_default_hook_saves_losses_and_metrics(sample_data, tmp_path):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, **{"debugger-save-interval": 3}),
                     channels_of(sample_data))
    assert result.returncode == 0, result.stderr
    trace = tmp_path / "output" / "data" / "debug"
    assert (trace / "training_job_end.ts").is_file()
    collections = json.loads((trace / "collections/000000000/worker_0_collections.json")
                             .read_text())["collections"]
    assert sorted(collections) == ["losses", "metrics"]
    indexes = [json.loads(path.read_text()) for path in sorted((trace / "index").rglob("*.json"))]
    modes = [index["meta"]["mode"] for index in indexes]
    # 120 images / 16 = 8 steps per epoch, 2 epochs: TRAIN steps 0, 3, ..., 15 and 2 EVAL.
    assert modes.count("TRAIN") == 6 and modes.count("EVAL") == 2
    assert [i["meta"]["mode_step"] for i in indexes if i["meta"]["mode"] == "TRAIN"] == \
        [0, 3, 6, 9, 12, 15]


def test_debugger_off_writes_nothing(sample_data, tmp_path):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1, debugger="off",
                                    profiler="off"), channels_of(sample_data))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "output" / "data" / "debug").exists()
    assert "callbacks: ProgressLogger\n" in result.stdout


def test_unknown_collection_fails_the_job(sample_data, tmp_path):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, **{"debugger-collections": "loss"}),
                     channels_of(sample_data))
    assert result.returncode == 1
    assert "unknown collection(s) loss" in (tmp_path / "output" / "failure").read_text()


@pytest.fixture(scope="session")
def smdebug_python(tmp_path_factory) -> Path:
    """A venv with smdebug 1.0.34 and its old pins (requirements/smdebug-reader.txt)."""
    venv = tmp_path_factory.mktemp("smdebug") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r",
                                str(REPO / "requirements" / "smdebug-reader.txt")],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return python


READER = textwrap.dedent("""
    import json, sys
    from smdebug.core.modes import ModeKeys
    from smdebug.trials import create_trial
    trial = create_trial(sys.argv[1])
    t = ModeKeys.TRAIN
    print(json.dumps({
        "train_steps": trial.steps(mode=t),
        "eval_steps": trial.steps(mode=ModeKeys.EVAL),
        "collections": sorted(trial.collections()),
        "losses": trial.tensor_names(collection="losses"),
        "loss": [float(trial.tensor("loss").value(s, mode=t)) for s in trial.steps(mode=t)],
        "valid_loss": [float(trial.tensor("valid_loss").value(s, mode=ModeKeys.EVAL))
                       for s in trial.steps(mode=ModeKeys.EVAL)],
        "conv1_l2": [float(trial.tensor("conv1.weight").reduction_value(s, "l2", mode=t))
                     for s in trial.steps(mode=t)],
        "fc_grad_l2": float(trial.tensor("gradient/fc.weight").reduction_value(
            0, "l2", mode=t)),
        "labels": trial.tensor("labels").value(0, mode=t).tolist(),
        "relu": len(trial.tensor_names(collection="relu_input")),
    }))
""")


def test_smdebug_reads_a_trace_written_by_a_job(sample_data, tmp_path, smdebug_python):
    torch.manual_seed(7)
    from torchvision.models import resnet50
    weights = tmp_path / "start.pth"
    start = resnet50(weights=None).state_dict()
    torch.save(start, weights)
    base = tmp_path / "job"
    hyperparameters = dict(FAST_HYPERPARAMETERS, pretrained=str(weights), trainable="fc",
                           **{"debugger-collections": "losses,metrics,weights,gradients,"
                              "relu_input,labels", "debugger-save-interval": 4})
    result = run_job(base, hyperparameters, channels_of(sample_data))
    assert result.returncode == 0, result.stderr
    # Pre-activation values: the in-place ReLU must not have rectified what was saved.
    relu_minima = [float(value) for step in iter_trace(base / "output" / "data" / "debug")
                   for name, value in step.tensors.items()
                   if name.startswith(reduction_name("", "min")) and "relu_input" in name]
    assert len(relu_minima) == 49 * 4 and max(relu_minima) < 0
    read = subprocess.run([str(smdebug_python), "-c", READER,
                           str(base / "output" / "data" / "debug")], capture_output=True,
                          text=True, env=dict(os.environ, SMDEBUG_TRAINING_END_DELAY_REFRESH="0"),
                          timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    found = json.loads(read.stdout.strip().splitlines()[-1])
    assert found["train_steps"] == [0, 4, 8, 12] and found["eval_steps"] == [0, 1]
    assert found["collections"] == ["gradients", "labels", "losses", "metrics", "relu_input",
                                    "weights"]
    history = json.loads((base / "model" / "metrics.json").read_text())["epochs"]
    # The EVAL steps hold what the job logged as valid_loss, epoch by epoch.
    assert found["valid_loss"] == pytest.approx([e["valid_loss"] for e in history], rel=1e-6)
    assert all(np.isfinite(found["loss"])) and len(found["loss"]) == 4
    # conv1 is frozen (trainable=fc): its norm is the starting file's, at every step.
    expected = float(np.linalg.norm(start["conv1.weight"].numpy().ravel()))
    assert found["conv1_l2"] == pytest.approx([expected] * 4, rel=1e-5)
    assert found["fc_grad_l2"] > 0  # (its mean is 0: softmax gradients sum to 0 per image)
    assert len(found["labels"]) == 16 and set(found["labels"]) <= set(range(5))
    assert found["relu"] == 49  # the stem's ReLU, and each of 16 blocks calls its ReLU 3 times


def test_a_sagemaker_hook_config_adds_collections_with_their_own_settings(sample_data,
                                                                          tmp_path):
    from launcher.job_dir import prepare_training_dir
    prepare_training_dir(tmp_path, {}, channels_of(sample_data))
    (tmp_path / "input" / "config" / "debughookconfig.json").write_text(json.dumps({
        "LocalPath": str(tmp_path / "tensors"),
        "HookParameters": {"save_interval": "5"},
        "CollectionConfigurations": [
            {"CollectionName": "gradients",
             "CollectionParameters": {"save_interval": "4", "reductions": "l2_norm,max"}},
            {"CollectionName": "labels"}]}))
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1), channels_of(sample_data))
    assert result.returncode == 0, result.stderr
    trace = tmp_path / "tensors"  # LocalPath, not output/data/debug
    collections = json.loads((trace / "collections/000000000/worker_0_collections.json")
                             .read_text())["collections"]
    assert sorted(collections) == ["gradients", "labels", "losses", "metrics"]
    assert collections["gradients"]["reduction_config"]["reductions"] == "l2_norm,max"
    assert collections["gradients"]["save_config"]["TRAIN"]["save_interval"] == 4
    steps = {json.loads(p.read_text())["meta"]["mode_step"]: json.loads(p.read_text())
             for p in (trace / "index").rglob("*.json")
             if json.loads(p.read_text())["meta"]["mode"] == "TRAIN"}
    # losses/metrics every 10 (hyperparameter), gradients every 4, labels every 5 (hook).
    assert sorted(steps) == [0, 4, 5]
    names = {entry["tensorname"] for entry in steps[4]["tensor_payload"]}
    assert "smdebug/reductions/l2/gradient/fc.weight" in names
    assert "smdebug/reductions/max/gradient/fc.weight" in names
    assert not any("mean" in name for name in names) and "labels" not in names
    assert {entry["tensorname"] for entry in steps[5]["tensor_payload"]} == {"labels"}


def test_a_bad_hook_config_fails_the_job_with_its_reason(sample_data, tmp_path):
    from launcher.job_dir import prepare_training_dir
    prepare_training_dir(tmp_path, {}, channels_of(sample_data))
    (tmp_path / "input" / "config" / "debughookconfig.json").write_text(json.dumps({
        "CollectionConfigurations": [{"CollectionName": "gradients", "CollectionParameters":
                                      {"reductions": "abs_mean"}}]}))
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1), channels_of(sample_data))
    assert result.returncode == 1
    assert "reduction 'abs_mean' is not supported" in (tmp_path / "output" / "failure").read_text()
