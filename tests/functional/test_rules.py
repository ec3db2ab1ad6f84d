"""The built-in debugger rules in real jobs: an exploding learning rate stops the job with
the reason, a healthy run is clean, a broken model shows vanishing gradients and poor
initialisation (and the offline evaluation agrees with the online one), a stalled job is
stopped. Each rule on synthetic steps is in unit/test_rules_synthetic.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

from conftest import FAST_HYPERPARAMETERS, channels_of, failure_reason, run_job


def rules_of(base: Path) -> dict[str, dict]:
    document = json.loads((base / "output" / "data" / "rules.json").read_text())
    return {entry["rule"]: entry for entry in document["rules"]}


def test_an_exploding_learning_rate_fires_and_stops_the_job(sample_data, tmp_path):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=3, lr=10, optimizer="sgd",
                                    rules="ExplodingTensor:stop,LossNotDecreasing",
                                    **{"debugger-save-interval": 1}),
                     channels_of(sample_data))
    assert result.returncode == 1
    rules = rules_of(tmp_path)
    assert rules["ExplodingTensor"]["status"] == "IssuesFound"
    assert rules["ExplodingTensor"]["action"] == "stop"
    reason = failure_reason(tmp_path)
    assert "rule ExplodingTensor found an issue" in reason and "NaN" in reason
    assert "epoch=2" not in result.stdout  # stopped after the first epoch of three
    assert "DebuggerRule ExplodingTensor: IssuesFound - at step" in result.stdout


def test_a_healthy_run_reports_no_issues(sample_data, tmp_path):
    # The default save interval: the loss rules save the (scalar) loss every step anyway.
    # rule-parameters reach the profiler rules too: a patience short enough to judge.
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=3, lr=0.0003,
                                    rules="ExplodingTensor:stop,LossNotDecreasing:stop",
                                    **{"rule-parameters": "IOBottleneck.patience=2"}),
                     channels_of(sample_data))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    profiler_rules = {entry["rule"]: entry for entry in json.loads(
        (tmp_path / "output/data/profiler/profiler_rules.json").read_text())["rules"]}
    assert profiler_rules["IOBottleneck"]["parameters"]["patience"] == 2
    assert profiler_rules["IOBottleneck"]["status"] == "NoIssuesFound"
    assert "too few to judge" not in profiler_rules["IOBottleneck"]["evidence"]
    rules = rules_of(tmp_path)
    assert {name: entry["status"] for name, entry in rules.items()} == {
        "ExplodingTensor": "NoIssuesFound", "LossNotDecreasing": "NoIssuesFound"}
    assert rules["LossNotDecreasing"]["steps_checked"] >= 1
    assert (tmp_path / "output" / "success").is_file()


@pytest.fixture(scope="module")
def broken_weights(tmp_path_factory) -> Path:
    """A ResNet50 whose BatchNorm scales are all 1e-3: activations shrink layer by layer."""
    model = resnet50()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(module.weight, 1e-3)
    path = tmp_path_factory.mktemp("broken") / "broken.pt"
    torch.save(model.state_dict(), path)
    return path


def test_a_broken_model_shows_vanishing_gradients_and_poor_initialisation(
        sample_data, tmp_path, broken_weights):
    rules = "VanishingGradient,PoorWeightInitialization,ExplodingTensor"
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1, pretrained=str(broken_weights),
                                    rules=rules), channels_of(sample_data))
    assert result.returncode == 0, result.stderr
    online = rules_of(tmp_path)
    assert online["VanishingGradient"]["status"] == "IssuesFound"
    assert "mean |gradient|" in online["VanishingGradient"]["evidence"]
    assert online["PoorWeightInitialization"]["status"] == "IssuesFound"
    assert online["ExplodingTensor"]["status"] == "NoIssuesFound"
    # The rules turned on what they read: gradients (with abs_mean), relu inputs (with std).
    trace = tmp_path / "output" / "data" / "debug"
    collections = json.loads((trace / "collections/000000000/worker_0_collections.json")
                             .read_text())["collections"]
    assert {"gradients", "relu_input", "losses"} <= set(collections)
    assert "abs_mean" in collections["gradients"]["reduction_config"]["reductions"]

    # Offline, on the saved trace: the same statuses at the same steps.
    out = tmp_path / "offline.json"
    offline_run = subprocess.run([sys.executable, "-m", "dogbreed.debugging.rules", str(trace), "--rules",
                                  rules, "--json", str(out)], capture_output=True, text=True)
    assert offline_run.returncode == 1  # an issue was found
    offline = {entry["rule"]: entry for entry in json.loads(out.read_text())["rules"]}
    for name in rules.split(","):
        assert (offline[name]["status"], offline[name]["step"]) == \
            (online[name]["status"], online[name]["step"]), name
    assert "DebuggerRule VanishingGradient: IssuesFound" in offline_run.stdout


def test_a_stalled_job_is_stopped_with_the_reason(sample_data, tmp_path):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, epochs=1,
                                    rules="StalledTrainingRule:stop",
                                    **{"rule-parameters": "StalledTrainingRule.threshold=0.01"}),
                     channels_of(sample_data))
    assert result.returncode == 1
    assert "rule StalledTrainingRule found an issue" in failure_reason(tmp_path)
    assert rules_of(tmp_path)["StalledTrainingRule"]["status"] == "IssuesFound"
    assert not (tmp_path / "model" / "model.json").exists()


@pytest.mark.parametrize("hyperparameters, message", [
    ({"rules": "ExplodingTensors"}, "unknown rule 'ExplodingTensors'"),
    ({"rules": "Overfit:email"}, "rule Overfit has action 'email'"),
    ({"rule-parameters": "Overfit.patients=2"}, "rule Overfit has no parameter 'patients'"),
    ({"rule-parameters": "Overfit.patience=soon"}, "must be a whole number >= 1, got 'soon'"),
    ({"rule-parameters": "LossNotDecreasing.num_steps=0"}, "must be a whole number >= 1"),
    ({"rule-parameters": "Overfit.ratio_threshold=nan"}, "must be a finite number >= 0"),
    ({"rule-parameters": "patience=2"}, "must look like Rule.parameter=value"),
    ({"rule-parameters": "StepOutlier.sigma=2"}, "rule StepOutlier has no parameter 'sigma'"),
])
def test_bad_rule_settings_fail_the_job_before_training(sample_data, tmp_path, hyperparameters,
                                                         message):
    result = run_job(tmp_path, dict(FAST_HYPERPARAMETERS, **hyperparameters),
                     channels_of(sample_data))
    assert result.returncode == 1
    assert message in failure_reason(tmp_path)
    assert "Traceback" not in result.stderr
