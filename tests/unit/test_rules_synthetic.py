"""The built-in debugger rules on synthetic steps: each fires on the pattern it names and
stays quiet otherwise; the offline evaluation reads back what the writer wrote. Real jobs
are in functional/test_rules.py."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from dogbreed.debugging.hook import StallWatchdog
from dogbreed.debugging.rules import RuleRunner, evaluate_trace
from dogbreed.debugging.trace import TraceStep
from dogbreed.rule_specs import SPECS

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
    from dogbreed.debugging.config import DebuggerConfig, collection_config
    from dogbreed.debugging.hook import DebuggerHook
    from dogbreed.training.callbacks import StepResult, TrainState
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
    from dogbreed.debugging.config import debugger_config
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


def test_offline_rules_on_a_folder_without_a_trace_say_so(tmp_path, capsys):
    """`python -m dogbreed.debugging.rules`'s messages, from its main() in process."""
    from dogbreed.debugging.rules import main
    assert main([str(tmp_path)]) == 2
    assert "holds no smdebug trace" in capsys.readouterr().err
    assert main([str(tmp_path), "--rules", "Nope"]) == 2
    assert "unknown rule(s) Nope" in capsys.readouterr().err


def test_offline_evaluation_reads_back_what_the_writer_wrote(tmp_path):
    from dogbreed.debugging.trace import TraceWriter
    writer = TraceWriter(tmp_path)
    for step, loss in enumerate([2.0, 1.0, float("nan")]):
        writer.begin_step(step, "TRAIN", step)
        writer.write("loss", np.float32(loss))
    writer.close()
    (result,) = evaluate_trace(tmp_path, {"ExplodingTensor": "log"}, log=lambda *a, **k: None)
    assert (result.status, result.step) == ("IssuesFound", 2)
