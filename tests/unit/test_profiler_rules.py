"""The profiler's pieces in process: no hook when it is off, NVML sampling, and each
profiler rule made to fire and not to fire on synthetic series (small patience). Real
jobs' traces are in functional/test_profiler.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from conftest import profiler_rule
from dogbreed.hyperparameters import parse_hyperparameters
from dogbreed.profiling.profiler import build_profiler
from dogbreed.profiling.rules import DEFAULT_PARAMETERS, evaluate_profiler_rules, rule_log_line
from dogbreed.profiling.system_metrics import Nvml, SystemSampler


def test_profiler_off_builds_no_hook(tmp_path):
    assert build_profiler(parse_hyperparameters({"profiler": "off"}), tmp_path) is None
    assert build_profiler(parse_hyperparameters({}), tmp_path) is not None


def test_gpu_samples_come_from_nvml(monkeypatch):
    """No GPU here: stand-ins for pynvml's device calls answer what the sampler asks."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def memory(handle):
        if handle != 100:  # the second device stops answering
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return SimpleNamespace(total=80 * 2**30, free=60 * 2**30, used=20 * 2**30)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: 100 + index)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda handle: SimpleNamespace(
        gpu=87, memory=40) if handle == 100 else SimpleNamespace(gpu=5, memory=1))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory)
    assert Nvml().sample() == [
        {"index": 0, "utilization_percent": 87.0, "memory_percent": 25.0}]
    monkeypatch.undo()
    nvml = Nvml.open()
    if nvml is None:  # no NVIDIA driver here
        return
    assert [gpu["index"] for gpu in nvml.sample()] == list(range(len(nvml.handles)))
    nvml.close()


def test_without_nvml_there_are_no_gpu_samples(monkeypatch, tmp_path):
    """No driver (nvmlInit fails), or one that stops answering after it: an empty `gpus`
    list, and the sampler runs on."""
    def fail(*args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    shutdowns = []
    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    assert Nvml.open() is None
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", fail)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: shutdowns.append(1))
    assert Nvml.open() is None and shutdowns == [1]
    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    sampler = SystemSampler(tmp_path / "system.jsonl", 0.05)
    sampler.start()
    time.sleep(0.2)
    sampler.stop()
    samples = [json.loads(line) for line in (tmp_path / "system.jsonl").read_text().splitlines()]
    assert len(samples) >= 2 and all(sample["gpus"] == [] for sample in samples)


def write_system(folder: Path, samples: list[dict]) -> None:
    lines = []
    for index, sample in enumerate(samples):
        gpus = [{"index": i, "utilization_percent": util, "memory_percent": mem}
                for i, (util, mem) in enumerate(sample.get("gpus", []))]
        lines.append(json.dumps({
            "time": 1000.0 + index * 0.5, "cpu_percent": sample.get("cpu", [20.0, 20.0]),
            "memory_percent": 30.0, "iowait_percent": sample.get("iowait", 0.0),
            "disk_read_bytes_per_s": 0.0, "disk_write_bytes_per_s": 0.0,
            "net_recv_bytes_per_s": 0.0, "net_sent_bytes_per_s": 0.0, "gpus": gpus}))
    (folder / "system.jsonl").write_text("\n".join(lines) + "\n")


def write_steps(folder: Path, durations: list[tuple[float, float]]) -> None:
    lines, start = [], 1000.0
    for index, (data, compute) in enumerate(durations):
        lines.append(json.dumps({"mode": "TRAIN", "epoch": 1, "step": index + 1,
                                 "global_step": index + 1, "start": start,
                                 "data_seconds": data, "compute_seconds": compute}))
        start += data + compute
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")


SHORT = {"patience": 10, "window": 10}


@pytest.mark.parametrize("series, status", [
    ([(20.0, 50.0)] * 30, "IssuesFound"),  # under-used
    ([(100.0, 50.0), (0.0, 50.0)] * 15, "IssuesFound"),  # fluctuating
    ([(95.0, 50.0)] * 30, "NoIssuesFound"),
])
def test_low_gpu_utilization(tmp_path, series, status):
    write_system(tmp_path, [{"gpus": [gpu]} for gpu in series])
    result = profiler_rule(tmp_path, "LowGPUUtilization", **SHORT)
    assert result["status"] == status, result
    assert result["datapoints"] == 30 and "GPU 0: p95 utilisation" in result["evidence"]


@pytest.mark.parametrize("cpu, gpu_util, status", [
    ([95.0, 20.0], 2.0, "IssuesFound"),  # one core saturated while the GPU idles
    ([60.0, 60.0], 2.0, "NoIssuesFound"),  # the GPU idles, but not for the CPU
    ([95.0, 95.0], 90.0, "NoIssuesFound"),  # busy CPU, busy GPU
])
def test_cpu_bottleneck(tmp_path, cpu, gpu_util, status):
    write_system(tmp_path, [{"cpu": cpu, "gpus": [(gpu_util, 40.0)]}] * 30)
    result = profiler_rule(tmp_path, "CPUBottleneck", patience=10)
    assert result["status"] == status, result
    assert result["datapoints"] == 30


def test_io_bottleneck_from_iowait(tmp_path):
    write_system(tmp_path, [{"iowait": 80.0, "gpus": [(1.0, 40.0)]}] * 30)
    write_steps(tmp_path, [(0.01, 0.2)] * 30)
    assert profiler_rule(tmp_path, "IOBottleneck", patience=10)["status"] == "IssuesFound"
    write_system(tmp_path, [{"iowait": 5.0, "gpus": [(1.0, 40.0)]}] * 30)
    assert profiler_rule(tmp_path, "IOBottleneck", patience=10)["status"] == "NoIssuesFound"


def test_io_bottleneck_from_data_loader_wait_even_without_gpu(tmp_path):
    write_system(tmp_path, [{}] * 30)
    write_steps(tmp_path, [(0.8, 0.2)] * 30)  # 80 % of each step waiting for data
    fired = profiler_rule(tmp_path, "IOBottleneck", patience=10)
    assert fired["status"] == "IssuesFound"
    assert "30 of 30 steps (100 %) waited for the data loader" in fired["evidence"]
    write_steps(tmp_path, [(0.8, 0.2)] * 5 + [(0.05, 0.5)] * 25)  # only epoch starts wait
    assert profiler_rule(tmp_path, "IOBottleneck", patience=10)["status"] == "NoIssuesFound"


@pytest.mark.parametrize("gpu, status", [
    ((30.0, 20.0), "IssuesFound"),  # everything idle: a bigger batch would fit
    ((95.0, 20.0), "NoIssuesFound"),  # the GPU is busy
    ((30.0, 85.0), "NoIssuesFound"),  # its memory is full
])
def test_batch_size(tmp_path, gpu, status):
    write_system(tmp_path, [{"cpu": [20.0, 30.0], "gpus": [gpu]}] * 30)
    assert profiler_rule(tmp_path, "BatchSize", **SHORT)["status"] == status


@pytest.mark.parametrize("slow_steps, status", [(12, "IssuesFound"), (3, "NoIssuesFound")])
def test_step_outlier(tmp_path, slow_steps, status):
    durations = [(0.1, 0.9)] * 150
    for index in range(slow_steps):
        durations[10 + index * 11] = (0.1, 9.9)
    write_steps(tmp_path, durations)
    result = profiler_rule(tmp_path, "StepOutlier")  # AWS defaults: > 100 steps, > 10 outliers
    assert result["status"] == status, result
    assert f"{slow_steps} of 150 steps took longer" in result["evidence"]
    assert result["datapoints"] == 150


@pytest.mark.parametrize("memory, status", [
    ([20.0] * 20 + [60.0] * 20, "IssuesFound"),  # a jump of 40 points
    # AWS's overlapping windows differ by about a fifth of a jump: +20 stays under 5.
    ([20.0] * 20 + [40.0] * 20, "NoIssuesFound"),
    ([30.0, 31.0] * 20, "NoIssuesFound"),
])
def test_gpu_memory_increase(tmp_path, memory, status):
    write_system(tmp_path, [{"gpus": [(90.0, value)]} for value in memory])
    assert profiler_rule(tmp_path, "GPUMemoryIncrease", **SHORT)["status"] == status


def test_gpu_rules_on_a_cpu_job_say_there_is_no_gpu(tmp_path):
    write_system(tmp_path, [{}] * 2000)
    for result in evaluate_profiler_rules(tmp_path):
        if result["rule"] in ("LowGPUUtilization", "BatchSize", "GPUMemoryIncrease",
                              "CPUBottleneck"):
            assert result["status"] == "NoIssuesFound"
            assert result["evidence"].startswith("no GPU in this job"), result


def test_aws_defaults_need_more_than_patience_samples(tmp_path):
    write_system(tmp_path, [{"gpus": [(5.0, 10.0)]}] * 1000)  # idle, but not > 1000 samples
    result = profiler_rule(tmp_path, "LowGPUUtilization")
    assert result["status"] == "NoIssuesFound" and "too few to judge" in result["evidence"]
    assert result["parameters"] == DEFAULT_PARAMETERS["LowGPUUtilization"]
    write_system(tmp_path, [{"gpus": [(5.0, 10.0)]}] * 1001)
    assert profiler_rule(tmp_path, "LowGPUUtilization")["status"] == "IssuesFound"


def test_a_malformed_line_is_an_error_for_the_rules_that_read_it(tmp_path):
    write_system(tmp_path, [{"gpus": [(95.0, 30.0)]}] * 30)
    write_steps(tmp_path, [(0.1, 0.9)] * 30)
    lines = (tmp_path / "system.jsonl").read_text().splitlines()
    lines[4] = lines[4][:40]
    (tmp_path / "system.jsonl").write_text("\n".join(lines) + "\n")
    results = {r["rule"]: r for r in evaluate_profiler_rules(tmp_path, {"StepOutlier": {}})}
    assert results["LowGPUUtilization"]["status"] == "Error"
    assert "system.jsonl line 5 is not JSON" in results["LowGPUUtilization"]["evidence"]
    assert results["StepOutlier"]["status"] == "NoIssuesFound"  # steps.jsonl is fine


def test_a_line_cut_off_by_a_killed_job_is_skipped(tmp_path):
    write_system(tmp_path, [{"gpus": [(20.0, 30.0)]}] * 30)
    with open(tmp_path / "system.jsonl", "a") as file:
        file.write('{"time": 1015.0, "cpu_per')
    result = profiler_rule(tmp_path, "LowGPUUtilization", **SHORT)
    assert result["status"] == "IssuesFound" and result["datapoints"] == 30


def test_unknown_rule_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="LowGPUUtilization has no parameter"):
        evaluate_profiler_rules(tmp_path, {"LowGPUUtilization": {"treshold_p95": 50}})
    with pytest.raises(ValueError, match="unknown profiler rule 'LowGPU'"):
        evaluate_profiler_rules(tmp_path, {"LowGPU": {}})


def test_rule_log_line_is_one_line():
    line = rule_log_line({"rule": "StepOutlier", "status": "IssuesFound",
                          "evidence": "12 of 150 steps took longer"})
    assert line == "ProfilerRule StepOutlier: IssuesFound - 12 of 150 steps took longer"
