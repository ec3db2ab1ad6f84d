"""The built-in debugger rules: each fires on the pattern it names and stays quiet
otherwise (synthetic steps), and in real jobs: an exploding learning rate stops the job
with the reason, a healthy run is clean, a broken model shows vanishing gradients and poor
initialisation, and the offline evaluation agrees with the online one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import resnet50

from conftest import FAST_HYPERPARAMETERS, channels_of, failure_reason, run_job
from dogbreed.debugger import StallWatchdog
from dogbreed.rule_specs import SPECS
from dogbreed.rules import RuleRunner, evaluate_trace
from dogbreed.smdebug_trace import TraceStep

R = "smdebug/reductions/"


def steps_with(names_values: list[dict], mode="TRAIN", dt=1.0) -> list[TraceStep]:
    return [TraceStep(i, mode, i, 1000.0 + i * dt,
                      {name: np.asarray(value) for name, value in values.items()})
            for i, values in enumerate(names_values)]


def epochs(train_losses: list[list[float]], valid_losses: list[float]) -> list[TraceStep]:
    """TRAIN steps of each epoch followed by its EVAL step (global steps as the hook
    numbers them)."""
    records, step, mode_step = [], 0, 0
    for epoch, (losses, valid) in enumerate(zip(train_losses, valid_losses)):
        for loss in losses:
            records.append(TraceStep(step, "TRAIN", mode_step, 1000.0 + step,
                                     {"loss": np.asarray(loss)}))
            step, mode_step = step + 1, mode_step + 1
        records.append(TraceStep(step, "EVAL", epoch, 1000.0 + step,
                                 {"loss": np.asarray(valid), "valid_loss": np.asarray(valid)}))
        step += 1
    return records


def gradient_means(*values):
    return steps_with([{f"{R}abs_mean/gradient/fc.weight": v,
                        f"{R}abs_mean/gradient/fc.bias": 1e-3} for v in values])


def relu_stds(*pairs):
    return steps_with([{f"{R}std/relu_input_0": a, f"{R}std/layer1.0.relu_input_0": b,
                        "loss": 2.0 - 0.1 * i} for i, (a, b) in enumerate(pairs)])


def classes(labels, predictions):
    return steps_with([{"labels": np.asarray(labels), "predictions": np.asarray(predictions)}])


def weight_updates(weight_norms, updates):
    return steps_with([{f"{R}l2/fc.weight": w, **({"dogbreed/update_l2/fc.weight": u}
                                                    if u is not None else {})}
                       for w, u in zip(weight_norms, updates)])


RNG = np.random.default_rng(0)
BALANCED = np.repeat(np.arange(5), 120)
# (rule, parameter overrides, steps that make it fire, steps that do not)
CASES = [
    ("VanishingGradient", {}, gradient_means(1e-3, 1e-8), gradient_means(1e-3, 1e-4)),
    ("ExplodingTensor", {}, steps_with([{"loss": 2.0}, {"loss": np.nan}]),
     steps_with([{"loss": 2.0}, {"loss": 1e30}])),
    ("Overfit", {}, epochs([[2.0, 1.0]], [1.8]), epochs([[2.0, 1.0]], [1.55])),
    ("Overtraining", {"patience_train": 3},
     epochs([[2.1, 1.9], [1.95], [1.96], [1.97]], [2.0, 1.8, 1.6, 1.4]),
     epochs([[2.1, 1.9], [1.8], [1.6], [1.4]], [2.0, 1.8, 1.6, 1.4])),
    ("LossNotDecreasing", {"num_steps": 2},
     steps_with([{"loss": v} for v in (2.0, 1.9, 1.9, 2.0, 1.95, 1.9)]),
     steps_with([{"loss": v} for v in (2.0, 1.9, 1.7, 1.6, 1.4, 1.3)])),
    ("PoorWeightInitialization", {}, relu_stds((1.0, 1.0), (0.1, 1.0)),
     relu_stds((1.0, 1.0), (0.5, 1.0))),
    ("DeadRelu", {}, steps_with([{"dogbreed/active_fraction/relu_input_0":
                                  np.array([0.0, 0.005, 0.3, 0.0])}]),
     steps_with([{"dogbreed/active_fraction/relu_input_0": np.array([0.0, 0.4, 0.3, 0.5])}])),
    ("ClassImbalance", {}, classes(np.r_[np.zeros(550), np.ones(50)], np.r_[np.zeros(550),
                                                                            np.ones(50)]),
     classes(BALANCED, BALANCED)),
    ("WeightUpdateRatio", {}, weight_updates([1.0, 1.0], [None, 0.0]),
     weight_updates([1.0, 1.0], [None, 1e-3])),
    ("AllZero", {}, steps_with([{"dogbreed/zero_fraction/gradient/fc.weight": 1.0}]),
     steps_with([{"dogbreed/zero_fraction/gradient/fc.weight": 0.99}])),
    ("StalledTrainingRule", {"threshold": 60.0}, steps_with([{"loss": 1}] * 3, dt=100.0),
     steps_with([{"loss": 1}] * 3, dt=10.0)),
]


def run_rule(rule: str, overrides: dict, records: list[TraceStep]):
    lines = []
    runner = RuleRunner({rule: "log"}, {rule: overrides}, log=lambda line, **_: lines.append(line))
    for record in records:
        runner.observe(record)
    (result,) = runner.finish()
    return result, lines


def test_every_builtin_rule_has_a_case():
    assert [case[0] for case in CASES] == list(SPECS)


@pytest.mark.parametrize("rule, overrides, firing, quiet", CASES, ids=[c[0] for c in CASES])
def test_each_rule_fires_on_its_pattern_and_not_otherwise(rule, overrides, firing, quiet):
    result, lines = run_rule(rule, overrides, firing)
    assert result.status == "IssuesFound", result
    assert lines == [f"DebuggerRule {rule}: IssuesFound - {result.evidence}"]
    assert result.step is not None and result.evidence.startswith(f"at step {result.step}")
    result, lines = run_rule(rule, overrides, quiet)
    assert result.status == "NoIssuesFound", result
    assert lines == [f"DebuggerRule {rule}: NoIssuesFound - {result.evidence}"]


@pytest.mark.parametrize("rule, overrides, firing, quiet, evidence", [
    ("PoorWeightInitialization", {},  # nearly constant gradients
     steps_with([{"dogbreed/p05/gradient/fc.weight": -1e-5, "dogbreed/p95/gradient/fc.weight":
                  1e-5}]),
     steps_with([{"dogbreed/p05/gradient/fc.weight": -0.01, "dogbreed/p95/gradient/fc.weight":
                  0.01}]), "5th-95th percentile range"),
    ("PoorWeightInitialization", {"patience": 3},  # a flat loss in the first steps
     steps_with([{"loss": v} for v in (2.0, 2.1, 2.05, 2.2)]),
     steps_with([{"loss": v} for v in (2.0, 2.1, 1.9, 2.2)]), "did not go below"),
    ("ClassImbalance", {"samples": 100},  # class 1 mostly wrong, in the latest samples
     classes(np.tile([0, 1], 60), np.tile([0, 0, 0, 0, 0, 0, 0, 1], 15)),  # class 1: 75 %
     classes(np.tile([0, 1], 60), np.tile([0, 1, 0, 1, 0, 1, 0, 0], 15)),  # class 1: 25 %
     "mispredicted"),
    ("Overtraining", {"patience_validation": 2},  # validation stuck, training improving
     epochs([[2.0], [1.5], [1.0]], [1.0, 0.95, 0.98]),
     epochs([[2.0], [1.5], [1.0]], [1.0, 0.8, 0.6]), "validation loss did not improve"),
])
def test_the_other_branches_of_a_rule(rule, overrides, firing, quiet, evidence):
    result, _ = run_rule(rule, overrides, firing)
    assert result.status == "IssuesFound" and evidence in result.evidence, result
    result, _ = run_rule(rule, overrides, quiet)
    assert result.status == "NoIssuesFound", result


def test_early_mispredictions_do_not_count_forever():
    """ClassImbalance judges mispredictions over the latest `samples` only."""
    wrong_first = classes(np.tile([0, 1], 100), np.zeros(200)) + \
        classes(np.tile([0, 1], 300), np.tile([0, 1], 300))
    result, _ = run_rule("ClassImbalance", {"samples": 500}, wrong_first)
    assert result.status == "NoIssuesFound", result


def test_a_step_the_fp16_scaler_skipped_is_not_saved(tmp_path):
    """Its gradients are inf by design; ExplodingTensor must not stop a healthy job."""
    from dogbreed.callbacks import StepResult, TrainState
    from dogbreed.debugger import DebuggerHook
    from dogbreed.debugger_config import DebuggerConfig, collection_config
    model = torch.nn.Linear(3, 2)
    model(torch.ones(1, 3)).sum().backward()
    config = DebuggerConfig(tmp_path / "debug", {"gradients": collection_config("gradients", 1)},
                            {"ExplodingTensor": "stop"})
    hook = DebuggerHook(config, tmp_path / "rules.json", tmp_path / "failure",
                        log=lambda *a, **k: None)
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                       epochs=1)
    hook.on_train_begin(state)
    for skipped in (True, False):
        model.weight.grad.fill_(float("inf") if skipped else 0.5)
        state.global_step += 1
        hook.on_step_end(state, StepResult(1, state.global_step, 2, torch.tensor(1.0),
                                           torch.zeros(1, 2), torch.zeros(1, dtype=torch.long),
                                           1, 0.0, 0.0, optimizer_skipped=skipped))
    hook.on_train_end(state)
    assert state.stop_reason is None
    (result,) = json.loads((tmp_path / "rules.json").read_text())["rules"]
    assert (result["status"], result["steps_checked"]) == ("NoIssuesFound", 1)


def test_rules_run_with_the_debugger_off_and_list_parameters_parse(tmp_path):
    from dogbreed.debugger_config import debugger_config
    from dogbreed.hyperparameters import parse_hyperparameters
    hp = parse_hyperparameters({"debugger": "off", "rules": "StalledTrainingRule,AllZero",
                                "rule-parameters": "AllZero.collection_names=weights,biases,"
                                                   "StalledTrainingRule.threshold=60"})
    config = debugger_config(hp, tmp_path, tmp_path / "debug")
    assert config is not None and set(config.rules) == {"StalledTrainingRule", "AllZero"}
    assert set(config.collections) == {"weights", "biases"}  # what AllZero watches
    assert config.rule_parameters["StalledTrainingRule"] == {"threshold": 60.0}


def test_a_rule_that_raises_reports_error_and_the_others_go_on():
    lines = []
    runner = RuleRunner({"Overfit": "log", "ExplodingTensor": "log"},
                        {"Overfit": {"ratio_threshold": "high"}},  # breaks the comparison
                        log=lambda line, **_: lines.append(line))
    for record in epochs([[2.0, float("inf")]], [1.0]):
        runner.observe(record)
    results = {r.rule: r for r in runner.finish()}
    assert results["Overfit"].status == "Error"
    assert results["Overfit"].evidence.startswith("TypeError")
    assert results["ExplodingTensor"].status == "IssuesFound"
    assert len(lines) == 2


def test_stall_watchdog_fires_only_when_steps_stop(tmp_path):
    lines = []
    runner = RuleRunner({"StalledTrainingRule": "log"}, {"StalledTrainingRule": {"threshold": 0.3}},
                        log=lambda line, **_: lines.append(line))
    watchdog = StallWatchdog(runner, "log", tmp_path / "rules.json", tmp_path / "failure")
    for _ in range(8):  # beating every 0.1 s: no stall
        time.sleep(0.1)
        watchdog.beat()
    assert runner.results["StalledTrainingRule"].status == "InProgress"
    time.sleep(1.0)  # no beat: stalled
    watchdog.stop()
    assert runner.results["StalledTrainingRule"].status == "IssuesFound"
    saved = json.loads((tmp_path / "rules.json").read_text())["rules"][0]
    assert saved["status"] == "IssuesFound" and "no step finished" in saved["evidence"]
    assert not (tmp_path / "failure").exists()  # action log: the job goes on


# ---- real jobs ----------------------------------------------------------------------------

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
    offline_run = subprocess.run([sys.executable, "-m", "dogbreed.rules", str(trace), "--rules",
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


# ---- bad inputs -----------------------------------------------------------------------------

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


def test_offline_rules_on_a_folder_without_a_trace_say_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dogbreed.rules", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "holds no smdebug trace" in result.stderr
    result = subprocess.run([sys.executable, "-m", "dogbreed.rules", str(tmp_path), "--rules",
                             "Nope"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown rule(s) Nope" in result.stderr


def test_offline_evaluation_reads_back_what_the_writer_wrote(tmp_path):
    from dogbreed.smdebug_trace import TraceWriter
    writer = TraceWriter(tmp_path)
    for step, loss in enumerate([2.0, 1.0, float("nan")]):
        writer.begin_step(step, "TRAIN", step)
        writer.write("loss", np.float32(loss))
    writer.close()
    (result,) = evaluate_trace(tmp_path, {"ExplodingTensor": "log"}, log=lambda *a, **k: None)
    assert (result.status, result.step) == ("IssuesFound", 2)
