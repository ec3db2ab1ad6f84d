"""The profiler in real training jobs: the torch profiler window's trace and top operators,
the step timeline, system samples covering the job, and every profiler rule logged and
saved. The rules on synthetic series are in unit/test_profiler_rules.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import FAST_HYPERPARAMETERS, channels_of, run_job
from dogbreed.profiling.rules import RULE_NAMES, rule_log_line

INTERVAL_MS = 200


STEPS_PER_EPOCH = 8  # 120 sample images in batches of 16


@pytest.fixture(scope="module")
def profiled_job(sample_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("profiled")
    hyperparameters = dict(FAST_HYPERPARAMETERS, epochs=1, debugger="off",
                           **{"profiler-start-step": 3, "profiler-num-steps": 2,
                              "profiler-interval-ms": INTERVAL_MS})
    result = run_job(base, hyperparameters, channels_of(sample_data))
    assert result.returncode == 0, result.stdout + result.stderr
    return base / "output" / "data" / "profiler", result


def test_the_window_writes_a_perfetto_trace_and_top_operators(profiled_job):
    folder, result = profiled_job
    events = json.loads((folder / "torch_trace.json").read_text())["traceEvents"]
    names = {event.get("name") for event in events}
    assert "aten::conv2d" in names
    # Two steps profiled (the warm-up step before them is not recorded).
    assert len({name for name in names if str(name).startswith("ProfilerStep#")}) == 2
    operators = json.loads((folder / "top_operators.json").read_text())
    assert 0 < len(operators) <= 20
    assert set(operators[0]) == {"name", "calls", "self_cpu_ms", "cpu_total_ms",
                                 "self_device_ms"}
    assert any("conv" in row["name"] for row in operators[:5]), operators[:5]
    assert not [row for row in operators if row["name"].startswith("ProfilerStep")]
    assert "trace of global steps 3-4 written" in result.stdout


def test_every_step_is_on_the_timeline(profiled_job):
    folder, _ = profiled_job
    steps = [json.loads(line) for line in (folder / "steps.jsonl").read_text().splitlines()]
    assert [step["global_step"] for step in steps] == list(range(1, STEPS_PER_EPOCH + 1))
    assert [step["step"] for step in steps] == list(range(1, STEPS_PER_EPOCH + 1))
    assert {step["mode"] for step in steps} == {"TRAIN"} and {s["epoch"] for s in steps} == {1}
    for before, after in zip(steps, steps[1:]):
        assert before["data_seconds"] >= 0 and before["compute_seconds"] > 0
        # A step starts waiting for data once the previous one ended.
        ended = before["start"] + before["data_seconds"] + before["compute_seconds"]
        assert ended <= after["start"] + 0.05


def test_system_samples_cover_the_whole_training(profiled_job):
    folder, _ = profiled_job
    samples = [json.loads(line) for line in (folder / "system.jsonl").read_text().splitlines()]
    steps = [json.loads(line) for line in (folder / "steps.jsonl").read_text().splitlines()]
    interval = INTERVAL_MS / 1000
    first_start = steps[0]["start"]
    last_end = steps[-1]["start"] + steps[-1]["data_seconds"] + steps[-1]["compute_seconds"]
    assert samples[0]["time"] <= first_start + interval + 0.5
    assert samples[-1]["time"] >= last_end  # the last sample is taken after validation
    times = [sample["time"] for sample in samples]
    assert max(b - a for a, b in zip(times, times[1:])) < interval + 1.0
    assert len(samples[0]["cpu_percent"]) >= 1
    assert samples[0]["gpus"] == [] or set(samples[0]["gpus"][0]) == {
        "index", "utilization_percent", "memory_percent"}
    assert set(samples[0]) == {"time", "cpu_percent", "memory_percent", "iowait_percent",
                               "disk_read_bytes_per_s", "disk_write_bytes_per_s",
                               "net_recv_bytes_per_s", "net_sent_bytes_per_s", "gpus"}
    # The training kept at least one core busy.
    assert max(max(sample["cpu_percent"]) for sample in samples) > 50


def test_the_job_logs_and_saves_every_profiler_rule(profiled_job):
    folder, result = profiled_job
    saved = json.loads((folder / "profiler_rules.json").read_text())["rules"]
    assert [rule["rule"] for rule in saved] == list(RULE_NAMES)
    lines = [line for line in result.stdout.splitlines() if line.startswith("ProfilerRule ")]
    assert lines == [rule_log_line(rule) for rule in saved]
    # A CPU job of 8 steps: nothing to judge, and the evidence says why.
    assert {rule["status"] for rule in saved} == {"NoIssuesFound"}
    by_name = {rule["rule"]: rule for rule in saved}
    assert by_name["LowGPUUtilization"]["evidence"] == "no GPU in this job"
    assert "too few to judge" in by_name["StepOutlier"]["evidence"]


def test_a_failing_job_keeps_what_was_recorded(tmp_path):
    """The loop raises: on_train_end never runs, yet the steps and samples reach disk."""
    script = textwrap.dedent(f"""
        import time, torch
        from pathlib import Path
        from dogbreed.training.callbacks import StepResult, TrainState
        from dogbreed.profiling.profiler import ProfilerHook
        model = torch.nn.Linear(2, 2)
        state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                           epochs=1)
        hook = ProfilerHook(Path({str(tmp_path)!r}), 0.05, 5, 0)
        hook.on_train_begin(state)
        for step in range(1, 4):
            state.global_step = step
            zero = torch.zeros(())
            hook.on_step_end(state, StepResult(1, step, 10, zero, zero, zero, 1, 0.01, 0.02))
            time.sleep(0.1)
        raise RuntimeError("the loader broke")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "the loader broke" in result.stderr
    steps = (tmp_path / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["global_step"] for line in steps] == [1, 2, 3]
    assert len((tmp_path / "system.jsonl").read_text().splitlines()) >= 3
