"""The built-in debugger rules by name: AWS's default parameters and what each one reads.

Kept apart from the rules' logic (`dogbreed.debugging.rules`) so that hyperparameter parsing and the
hook's configuration can check names and turn on collections without importing numpy.
Defaults are SageMaker Debugger's documented ones (container_src/docs/
debugger-rules-research.md); `needs` are the collections the hook must save, and `probes`
the extra per-step values it computes for a rule (`dogbreed/<probe>/<tensor>` in the trace).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

RULE_ACTIONS = ("log", "stop")
# Parameters that count steps, samples or evaluations: whole numbers.
COUNTS = ("patience", "patience_train", "patience_validation", "num_steps", "steps",
          "samples", "window", "n_outliers", "start_step", "scan_interval_us")


@dataclass(frozen=True)
class RuleSpec:
    name: str
    defaults: dict[str, Any]
    needs: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    # Steps this rule must see saved, whatever the save interval (PoorWeightInitialization
    # looks at the first steps only).
    first_steps: int = 0
    about: str = field(default="", compare=False)


SPECS = {spec.name: spec for spec in (
    RuleSpec("VanishingGradient", {"threshold": 1e-7}, ("gradients",), ("abs_mean",),
             about="a gradient's mean absolute value fell below threshold"),
    RuleSpec("ExplodingTensor", {"only_nan": False}, ("losses",),
             about="a saved tensor (value or reduction) is NaN or infinite"),
    RuleSpec("Overfit", {"start_step": 0, "patience": 1, "ratio_threshold": 0.1},
             ("losses", "metrics"),
             about="(valid_loss - train loss) / train loss above ratio_threshold for "
                   "patience evaluations"),
    RuleSpec("Overtraining", {"patience_train": 5, "patience_validation": 10, "delta": 0.1},
             ("losses", "metrics"),
             about="the training or validation loss stopped improving by delta"),
    RuleSpec("LossNotDecreasing", {"num_steps": 10, "diff_percent": 0.0},
             ("losses",),
             about="the training loss did not decrease over num_steps steps"),
    RuleSpec("PoorWeightInitialization",
             {"threshold": 10.0, "distribution_range": 0.001, "patience": 5, "steps": 10},
             ("relu_input", "gradients", "losses"), ("p05", "p95"), first_steps=10,
             about="activation variances differ across layers by more than threshold, or "
                   "gradients are nearly constant, or the loss is flat in the first steps"),
    RuleSpec("DeadRelu", {"threshold_inactivity": 1.0, "threshold_layer": 50.0},
             ("relu_input",), ("active_fraction",),
             about="in a ReLU layer, more than threshold_layer % of units are active for "
                   "fewer than threshold_inactivity % of inputs"),
    RuleSpec("ClassImbalance", {"threshold_imbalance": 10.0, "threshold_misprediction": 0.7,
                                "samples": 500},
             ("outputs", "labels"),
             about="class counts differ by more than threshold_imbalance, or a class is "
                   "mispredicted more than threshold_misprediction of the time"),
    RuleSpec("WeightUpdateRatio", {"large_threshold": 10.0, "small_threshold": 1e-8,
                                   "epsilon": 1e-9},
             ("weights",), ("update_l2",),
             about="a trained weight's update is tiny or huge relative to the weight"),
    RuleSpec("AllZero", {"threshold": 100.0, "collection_names": "weights,gradients"},
             ("weights", "gradients"), ("zero_fraction",),
             about="threshold % or more of a tensor's values are zero"),
    RuleSpec("StalledTrainingRule", {"threshold": 1800.0},
             about="no step saved for threshold seconds"),
)}
RULE_NAMES = tuple(SPECS)

SCAN = {"scan_interval_us": 60_000_000}
# The profiler rules' defaults (AWS's ProfilerReport; logic in dogbreed.profiling.rules).
PROFILER_DEFAULTS: dict[str, dict] = {
    "LowGPUUtilization": {"threshold_p95": 70, "threshold_p5": 10, "window": 500,
                          "patience": 1000, **SCAN},
    "CPUBottleneck": {"threshold": 50, "gpu_threshold": 10, "cpu_threshold": 90,
                      "patience": 1000, **SCAN},
    "IOBottleneck": {"threshold": 50, "gpu_threshold": 10, "io_threshold": 50,
                     "patience": 1000, "loader_wait_threshold": 50, **SCAN},
    "BatchSize": {"cpu_threshold_p95": 70, "gpu_threshold_p95": 70,
                  "gpu_memory_threshold_p95": 70, "patience": 1000, "window": 500, **SCAN},
    "StepOutlier": {"stddev": 3, "mode": None, "n_outliers": 10, **SCAN},
    "GPUMemoryIncrease": {"increase": 5, "patience": 1000, "window": 10, **SCAN},
}


def parse_rule_parameters(text: str) -> dict[str, dict[str, Any]]:
    """`Rule.param=value,...` -> {rule: {param: value}}, typed like the default, for the
    debugger rules and the profiler rules alike. A part
    without `=` continues the value before it, so a list value reads naturally:
    `AllZero.collection_names=weights,biases,Overfit.patience=2`."""
    entries: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part and entries:
            entries[-1] += f",{part}"
        else:
            entries.append(part)
    overrides: dict[str, dict[str, Any]] = defaultdict(dict)
    for entry in entries:
        target, equals, raw = entry.partition("=")
        rule, dot, parameter = target.strip().partition(".")
        if not (equals and dot) or rule not in SPECS and rule not in PROFILER_DEFAULTS:
            raise ValueError(f"rule parameter {entry!r} must look like Rule.parameter=value "
                             f"with a rule among {', '.join([*SPECS, *PROFILER_DEFAULTS])}")
        defaults = SPECS[rule].defaults if rule in SPECS else PROFILER_DEFAULTS[rule]
        if parameter not in defaults:
            raise ValueError(f"rule {rule} has no parameter {parameter!r}; it has "
                             f"{', '.join(defaults)}")
        overrides[rule][parameter] = _typed(rule, parameter, defaults[parameter], raw.strip())
    return dict(overrides)


def _typed(rule: str, parameter: str, default: Any, raw: str) -> Any:
    """Like the default: true/false, text, a count (a whole number >= 1; start_step >= 0),
    or any other number (finite, >= 0)."""
    what = f"rule parameter {rule}.{parameter}"
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"{what} must be true or false, got {raw!r}")
        return raw.lower() == "true"
    if default is None or isinstance(default, str):
        return raw
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if parameter in COUNTS:
        lowest = 0 if parameter == "start_step" else 1
        if not math.isfinite(number) or number != int(number) or number < lowest:
            raise ValueError(f"{what} must be a whole number >= {lowest}, got {raw!r}")
        return int(number)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {raw!r}")
    return int(number) if isinstance(default, int) and number == int(number) else number
