"""Profiler rules in the spirit of SageMaker Debugger's ProfilerReport, over a saved folder.

They read the profiler's `system.jsonl` (one sample per interval) and `steps.jsonl` (one
line per training step), so they run at the end of a job and offline on a downloaded
folder alike (`evaluate_profiler_rules(folder)`). Torch-free. Names, default parameters
and logic are AWS's (smdebug-rules-config and sagemaker-debugger's profiler rules):

- LowGPUUtilization (threshold_p95=70, threshold_p5=10, window=500, patience=1000): over
  a GPU's last `window` samples, p95 utilisation < threshold_p95 (under-used), or p95 >
  threshold_p95 while p5 < threshold_p5 (fluctuating).
- CPUBottleneck (threshold=50, gpu_threshold=10, cpu_threshold=90, patience=1000): more
  than `threshold` % of samples have a GPU under gpu_threshold % while a CPU core is over
  cpu_threshold %.
- IOBottleneck (threshold=50, gpu_threshold=10, io_threshold=50, patience=1000,
  loader_wait_threshold=50): more than `threshold` % of samples have a GPU under
  gpu_threshold % while iowait is over io_threshold % (AWS); or, our addition that also
  works without a GPU, more than `threshold` % of training steps spent more than
  loader_wait_threshold % of their time waiting for the data loader (patience in steps).
- BatchSize (cpu_threshold_p95=70, gpu_threshold_p95=70, gpu_memory_threshold_p95=70,
  window=500, patience=1000): over the last `window` samples, the p95 of mean CPU, of GPU
  utilisation and of GPU memory are all under their thresholds: a bigger batch would fit.
- StepOutlier (stddev=3, mode=None, n_outliers=10): a mode (TRAIN; None = each mode) has
  more than 100 steps, and more than n_outliers of them last longer than mean + stddev x
  std of all its steps (a step = data wait + compute).
- GPUMemoryIncrease (increase=5, window=10, patience=1000): after `patience` samples, the
  mean GPU memory of the last `window` samples is more than `increase` points above that
  of the window before.

As at AWS, every rule also takes `scan_interval_us=60000000`: the conditions are checked
once per minute of timeline (and at the end) on the data up to that point, and a rule that
fired once stays fired. Patience counts samples (steps for IOBottleneck's loader condition): at
the default 500 ms interval, 1000 samples are about 8 minutes, so a shorter job never
fires; `parameters` overrides any default per rule (`{"LowGPUUtilization": {"patience":
20}}`). Faithful to AWS also where it is odd: StepOutlier's mean and std include warm-up
steps, and GPUMemoryIncrease's "previous window" is `v[-window-1:-2]`, which overlaps
the last one: the two means differ by about a fifth of a sudden jump (or 1.5 x a steady
rise per sample), so with increase=5 the rule fires on a jump of more than ~25 points or a
rise of more than ~3.3 points per sample, not on a slow leak.

Rules that judge GPU use report NoIssuesFound with the evidence "no GPU in this job" on a
CPU job. A rule that raises reports Error with the exception's text; the others still run.
A malformed line in a file is such an error, naming the file and line, for the rules that
read that file; only a cut-off last line (no newline: the job was killed mid-write) is
skipped.
"""

from __future__ import annotations

import bisect
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from dogbreed.rule_specs import PROFILER_DEFAULTS

# AWS's defaults, kept with the debugger rules' (hyperparameters check overrides there).
DEFAULT_PARAMETERS: dict[str, dict] = PROFILER_DEFAULTS
RULE_NAMES = tuple(DEFAULT_PARAMETERS)
STEP_OUTLIER_MIN_STEPS = 100  # hard-coded in AWS's StepOutlier
NO_GPU = "no GPU in this job"
SYSTEM_KEYS = ("time", "cpu_percent", "iowait_percent", "gpus")
STEP_KEYS = ("mode", "global_step", "start", "data_seconds", "compute_seconds")


class ProfilerDataError(ValueError):
    """A profiler file the rules cannot read; the message names the file and line."""


def evaluate_profiler_rules(profiler_dir: Path, parameters: dict | None = None) -> list[dict]:
    """One result per rule: {"rule", "status", "evidence", "parameters", "datapoints"}."""
    chosen = _merge_parameters(parameters or {})
    data = _Data(Path(profiler_dir))
    results = []
    for name in RULE_NAMES:
        try:
            fired, evidence, datapoints = RULES[name](data, chosen[name])
            status = "IssuesFound" if fired else "NoIssuesFound"
        except Exception as error:  # one broken rule must not hide the others' results
            status, evidence, datapoints = "Error", f"{type(error).__name__}: {error}", 0
        results.append({"rule": name, "status": status, "evidence": " ".join(evidence.split()),
                        "parameters": chosen[name], "datapoints": datapoints})
    return results


def rule_log_line(result: dict) -> str:
    """The log line CloudWatch metric filters match: `ProfilerRule <Name>: <Status> - ...`."""
    return f"ProfilerRule {result['rule']}: {result['status']} - {result['evidence']}"


def write_rule_results(path: Path, results: list[dict]) -> None:
    Path(path).write_text(json.dumps({"rules": results}, indent=2) + "\n")


# ---- the data ------------------------------------------------------------------------------

class _Data:
    """The two files, read on first use; a read error is raised again to each rule."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._loaded: dict[str, list[dict] | Exception] = {}

    @property
    def system(self) -> list[dict]:
        return self._load("system.jsonl", SYSTEM_KEYS)

    @property
    def steps(self) -> list[dict]:
        return self._load("steps.jsonl", STEP_KEYS)

    def gpu_series(self, key: str) -> dict[int, list[tuple[float, float]]]:
        """{gpu index: [(time, value), ...]} for utilization_percent or memory_percent."""
        series: dict[int, list[tuple[float, float]]] = {}
        for sample in self.system:
            for gpu in sample["gpus"]:
                series.setdefault(int(gpu["index"]), []).append(
                    (float(sample["time"]), float(gpu[key])))
        return series

    def _load(self, name: str, keys: tuple[str, ...]) -> list[dict]:
        if name not in self._loaded:
            try:
                self._loaded[name] = read_jsonl(self.folder / name, keys)
            except ProfilerDataError as error:
                self._loaded[name] = error
        loaded = self._loaded[name]
        if isinstance(loaded, Exception):
            raise loaded
        return loaded


def read_jsonl(path: Path, keys: tuple[str, ...] = ()) -> list[dict]:
    """The records of a JSON-lines file ([] if it does not exist)."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: cut off by a killed job
                continue
            raise ProfilerDataError(f"{path.name} line {number} is not JSON: {error}") from None
        missing = [key for key in keys if not isinstance(record, dict) or key not in record]
        if missing:
            raise ProfilerDataError(f"{path.name} line {number} lacks {', '.join(missing)}")
        records.append(record)
    return records


def _merge_parameters(overrides: dict) -> dict[str, dict]:
    merged = {name: dict(defaults) for name, defaults in DEFAULT_PARAMETERS.items()}
    for rule, values in overrides.items():
        if rule not in merged:
            raise ValueError(f"unknown profiler rule {rule!r}; known: {', '.join(RULE_NAMES)}")
        unknown = sorted(set(values) - set(merged[rule]))
        if unknown:
            raise ValueError(f"profiler rule {rule} has no parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(merged[rule])}")
        merged[rule].update(values)
    return merged


# ---- helpers -------------------------------------------------------------------------------

def _scan_ends(times: list[float], scan_interval_us: float) -> list[int]:
    """Indices of the last record of each scan interval of the timeline, and the last one:
    where AWS checks a rule's condition."""
    interval = scan_interval_us / 1e6
    ends: list[int] = []
    if not times:
        return ends
    boundary = times[0] + interval
    for index, moment in enumerate(times):
        if moment >= boundary:
            if index > 0:
                ends.append(index - 1)
            while moment >= boundary:
                boundary += interval
    if not ends or ends[-1] != len(times) - 1:
        ends.append(len(times) - 1)
    return ends


def _percentile(values, q: float) -> float:
    return float(np.percentile(values, q))




def _too_few(count: int, patience: int, what: str = "samples") -> str:
    return (f"{count} {what}, not more than patience {patience}: too few to judge "
            f"(override the rule's patience for short jobs)")


# ---- the rules -----------------------------------------------------------------------------

def low_gpu_utilization(data: _Data, p: dict) -> tuple[bool, str, int]:
    series = data.gpu_series("utilization_percent")
    if not series:
        return False, NO_GPU, 0
    findings, summaries, datapoints = [], [], 0
    for index, points in sorted(series.items()):
        values = [value for _, value in points]
        datapoints += len(values)
        if len(values) <= p["patience"]:
            summaries.append(f"GPU {index}: " + _too_few(len(values), p["patience"]))
            continue
        checks = under = fluctuating = 0
        for end in _scan_ends([t for t, _ in points], p["scan_interval_us"]):
            if end + 1 <= p["patience"]:
                continue
            window = values[max(0, end + 1 - p["window"]):end + 1]
            p95, p5 = _percentile(window, 95), _percentile(window, 5)
            checks += 1
            if p95 < p["threshold_p95"]:
                under += 1
            elif p95 > p["threshold_p95"] and p5 < p["threshold_p5"]:
                fluctuating += 1
        text = (f"GPU {index}: p95 utilisation {p95:.0f} %, p5 {p5:.0f} % over its last "
                f"{len(window)} samples")
        if under or fluctuating:
            findings.append(f"{text}; under-used (p95 < {p['threshold_p95']} %) at {under} "
                            f"and fluctuating (p5 < {p['threshold_p5']} %) at {fluctuating} of "
                            f"{checks} checks")
        else:
            summaries.append(f"{text} (limits p95 >= {p['threshold_p95']} %, "
                             f"p5 >= {p['threshold_p5']} % when busy)")
    return bool(findings), "; ".join(findings or summaries), datapoints


def cpu_bottleneck(data: _Data, p: dict) -> tuple[bool, str, int]:
    def busy(sample: dict) -> bool:
        return max(sample["cpu_percent"], default=0.0) > p["cpu_threshold"]
    return _gpu_starved(data, p, busy, f"a CPU core above {p['cpu_threshold']} %")


def io_bottleneck(data: _Data, p: dict) -> tuple[bool, str, int]:
    def waiting(sample: dict) -> bool:
        return float(sample["iowait_percent"]) > p["io_threshold"]
    fired_io, io_text, samples = _gpu_starved(data, p, waiting,
                                              f"iowait above {p['io_threshold']} %")
    fired_loader, loader_text, steps = _loader_wait(data, p)
    return fired_io or fired_loader, f"{loader_text}; {io_text}", samples + steps


def _gpu_starved(data: _Data, p: dict, cause: Callable[[dict], bool],
                 cause_text: str) -> tuple[bool, str, int]:
    """AWS's CPU and IO bottleneck: the share of samples where a GPU idles while `cause`."""
    samples = [s for s in data.system if s["gpus"]]
    if not samples:
        return False, f"{NO_GPU} (the rule looks for GPUs idling while {cause_text})", 0
    flags = [min(float(g["utilization_percent"]) for g in s["gpus"]) < p["gpu_threshold"]
             and cause(s) for s in samples]
    if len(flags) <= p["patience"]:
        return False, _too_few(len(flags), p["patience"]), len(flags)
    counts = np.cumsum(flags)
    fired_at = [end for end in _scan_ends([float(s["time"]) for s in samples],
                                          p["scan_interval_us"])
                if end + 1 > p["patience"] and 100 * counts[end] / (end + 1) > p["threshold"]]
    share = 100 * sum(flags) / len(flags)
    text = (f"{sum(flags)} of {len(flags)} samples ({share:.0f} %) had a GPU below "
            f"{p['gpu_threshold']} % with {cause_text} (limit {p['threshold']} %)")
    if fired_at:
        text += f"; over the limit at {len(fired_at)} check(s)"
    return bool(fired_at), text, len(flags)


def _loader_wait(data: _Data, p: dict) -> tuple[bool, str, int]:
    """Ours: steps that spent most of their time waiting for the data loader."""
    steps = data.steps
    if not steps:
        return False, "no training steps recorded", 0
    flags = []
    for step in steps:
        total = float(step["data_seconds"]) + float(step["compute_seconds"])
        flags.append(total > 0 and 100 * float(step["data_seconds"]) / total
                     > p["loader_wait_threshold"])
    share = 100 * sum(flags) / len(flags)
    text = (f"{sum(flags)} of {len(flags)} steps ({share:.0f} %) waited for the data loader "
            f"more than {p['loader_wait_threshold']} % of the step (limit {p['threshold']} %)")
    if len(flags) <= p["patience"]:
        return False, f"{text}, but " + _too_few(len(flags), p["patience"], "steps"), len(flags)
    counts = np.cumsum(flags)
    fired = any(end + 1 > p["patience"] and 100 * counts[end] / (end + 1) > p["threshold"]
                for end in _scan_ends([float(s["start"]) for s in steps], p["scan_interval_us"]))
    return fired, text, len(flags)


def batch_size(data: _Data, p: dict) -> tuple[bool, str, int]:
    utilization, memory = data.gpu_series("utilization_percent"), data.gpu_series("memory_percent")
    if not utilization:
        return False, NO_GPU, 0
    system = data.system
    cpu = [float(np.mean(s["cpu_percent"])) if s["cpu_percent"] else 0.0 for s in system]
    if len(cpu) <= max(p["patience"], p["window"]):
        return False, _too_few(len(cpu), max(p["patience"], p["window"])), len(cpu)
    times = [float(s["time"]) for s in system]
    violations, text = 0, ""
    for end in _scan_ends(times, p["scan_interval_us"]):
        n = end + 1
        if n <= p["window"] or n <= p["patience"]:
            continue
        cpu_p95 = _percentile(cpu[n - p["window"]:n], 95)
        text = f"p95 of mean CPU {cpu_p95:.0f} % over the last {p['window']} samples"
        if cpu_p95 >= p["cpu_threshold_p95"]:
            continue
        for index, points in sorted(utilization.items()):
            upto = bisect.bisect_right(points, (times[end], math.inf))
            if upto <= p["window"]:
                continue
            util_p95 = _percentile([v for _, v in points[upto - p["window"]:upto]], 95)
            mem_p95 = _percentile([v for _, v in memory[index][upto - p["window"]:upto]], 95)
            text = (f"p95 of mean CPU {cpu_p95:.0f} %, GPU {index} utilisation "
                    f"{util_p95:.0f} % and memory {mem_p95:.0f} % over the last "
                    f"{p['window']} samples")
            if util_p95 < p["gpu_threshold_p95"] and mem_p95 < p["gpu_memory_threshold_p95"]:
                violations += 1
    limits = (f"limits {p['cpu_threshold_p95']} / {p['gpu_threshold_p95']} / "
              f"{p['gpu_memory_threshold_p95']} %")
    if violations:
        return True, (f"{text}: all under their {limits} at {violations} check(s); a larger "
                      "batch would use the machine better"), len(cpu)
    return False, f"{text} ({limits}; all three must be under to fire)", len(cpu)


def step_outlier(data: _Data, p: dict) -> tuple[bool, str, int]:
    modes = [p["mode"]] if p["mode"] else sorted({step["mode"] for step in data.steps})
    if not modes:
        return False, "no steps recorded", 0
    findings, summaries, datapoints = [], [], 0
    for mode in modes:
        steps = [step for step in data.steps if step["mode"] == mode]
        durations = np.array([float(s["data_seconds"]) + float(s["compute_seconds"])
                              for s in steps])
        datapoints += len(durations)
        if len(durations) <= STEP_OUTLIER_MIN_STEPS:
            summaries.append(f"{mode}: {len(durations)} steps, not more than "
                             f"{STEP_OUTLIER_MIN_STEPS}: too few to judge")
            continue
        checks = 0
        for end in _scan_ends([float(s["start"]) for s in steps], p["scan_interval_us"]):
            if end + 1 <= STEP_OUTLIER_MIN_STEPS:
                continue
            upto = durations[:end + 1]
            mean, std = float(upto.mean()), float(upto.std())
            limit = mean + p["stddev"] * std
            outliers = np.flatnonzero(upto > limit)
            checks += len(outliers) > p["n_outliers"]
        slowest = sorted(outliers, key=lambda i: -durations[i])[:3]
        text = (f"{mode}: {len(outliers)} of {len(upto)} steps took longer than mean "
                f"{mean:.3f} s + {p['stddev']} x std {std:.3f} s = {limit:.3f} s (allowed "
                f"{p['n_outliers']})")
        if slowest:
            text += "; slowest: " + ", ".join(
                f"global step {steps[i]['global_step']} ({durations[i]:.2f} s)" for i in slowest)
        (findings if checks else summaries).append(text)
    return bool(findings), "; ".join(findings or summaries), datapoints


def gpu_memory_increase(data: _Data, p: dict) -> tuple[bool, str, int]:
    series = data.gpu_series("memory_percent")
    if not series:
        return False, NO_GPU, 0
    window, findings, summaries, datapoints = p["window"], [], [], 0
    for index, points in sorted(series.items()):
        values = [value for _, value in points]
        datapoints += len(values)
        largest, at, violations = -math.inf, 0, 0
        for n in range(window + 2, len(values) + 1):  # AWS: evaluated on every sample
            diff = (float(np.mean(values[n - window:n]))
                    - float(np.mean(values[n - window - 1:n - 2])))
            if diff > largest:
                largest, at = diff, points[n - 1][0] - points[0][0]
            violations += diff > p["increase"] and n > p["patience"]
        if violations:
            findings.append(f"GPU {index}: memory rose by more than {p['increase']} points "
                            f"between windows of {window} samples at {violations} samples "
                            f"(largest {largest:.1f} points, {at:.0f} s into the job)")
        elif len(values) <= p["patience"]:
            summaries.append(f"GPU {index}: " + _too_few(len(values), p["patience"]))
        else:
            rise = f"largest rise {largest:.1f} points" if largest > -math.inf else "no rise"
            summaries.append(f"GPU {index}: {rise} between windows of {window} samples "
                             f"(limit {p['increase']})")
    return bool(findings), "; ".join(findings or summaries), datapoints


RULES: dict[str, Callable[[_Data, dict], tuple[bool, str, int]]] = {
    "LowGPUUtilization": low_gpu_utilization,
    "CPUBottleneck": cpu_bottleneck,
    "IOBottleneck": io_bottleneck,
    "BatchSize": batch_size,
    "StepOutlier": step_outlier,
    "GPUMemoryIncrease": gpu_memory_increase,
}
