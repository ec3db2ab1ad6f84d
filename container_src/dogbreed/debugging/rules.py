"""SageMaker Debugger's built-in rules, evaluated on the trace: during training (the hook
hands each step it writes to `RuleRunner.observe`) and offline on a saved trace
(`python -m dogbreed.debugging.rules TRACE_DIR`). Both see the same steps, so they agree.

AWS publishes these rules' names, parameters and defaults but not their code; the logic
here follows the documented behaviour (container_src/docs/debugger-rules-research.md, [R]
marks where we had to choose). As on SageMaker, a rule ends at its first finding:
IssuesFound, with the step and the evidence; a rule that never fires ends NoIssuesFound;
one that raises ends Error. Each status is printed as one line,

    DebuggerRule <Name>: <Status> - <evidence>

for CloudWatch metric filters, and all of them are saved to `rules.json`. Torch-free.

Tensor names read (written by `dogbreed.debugging.hook`): `loss` (TRAIN: the batch objective;
EVAL: valid_loss), `valid_loss`, `smdebug/reductions/<r>/<tensor>`, `predictions`,
`labels`, and the rules' probes `dogbreed/<probe>/<tensor>`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.debugging.trace import TraceStep, iter_trace
from dogbreed.rule_specs import SPECS, parse_rule_parameters

REDUCTION = "smdebug/reductions/"
PROBE = "dogbreed/"


def probe_name(probe: str, tensor: str) -> str:
    return f"{PROBE}{probe}/{tensor}"


def _tensors(record: TraceStep, prefix: str) -> dict[str, np.ndarray]:
    """Tensors under a name prefix, keyed by the rest of the name."""
    return {name[len(prefix):]: value for name, value in record.tensors.items()
            if name.startswith(prefix)}


class Rule:
    """One rule's state over the steps it sees; `check` returns evidence when it fires."""

    def __init__(self, parameters: dict[str, Any]):
        self.p = parameters
        self.checked = 0  # steps that had what the rule reads

    def check(self, record: TraceStep) -> str | None:
        raise NotImplementedError

    def quiet(self) -> str:
        """Evidence for NoIssuesFound."""
        return f"no issue in {self.checked} checked step(s)"


class VanishingGradient(Rule):
    def check(self, record):
        means = _tensors(record, REDUCTION + "abs_mean/gradient/")
        if not means:
            return None
        self.checked += 1
        name, value = min(means.items(), key=lambda item: float(item[1]))
        if float(value) < self.p["threshold"]:
            return (f"gradient/{name} has mean |gradient| {float(value):.3g} < threshold "
                    f"{self.p['threshold']:g}")
        return None

    def quiet(self):
        return (f"smallest mean |gradient| stayed >= {self.p['threshold']:g} in "
                f"{self.checked} checked step(s)")


class ExplodingTensor(Rule):
    def check(self, record):
        self.checked += 1
        for name, value in record.tensors.items():
            if not np.issubdtype(value.dtype, np.floating):
                continue
            bad = np.isnan(value) if self.p["only_nan"] else ~np.isfinite(value)
            if bad.any():
                return f"{name} is {'NaN' if np.isnan(value).any() else 'infinite'}"
        return None

    def quiet(self):
        return f"every saved tensor was finite in {self.checked} step(s)"


class Overfit(Rule):
    """[R] train window = the TRAIN losses since the previous evaluation."""

    def __init__(self, parameters):
        super().__init__(parameters)
        self.train_losses: list[float] = []
        self.count = 0

    def check(self, record):
        if record.mode == "TRAIN" and "loss" in record.tensors:
            if record.step >= self.p["start_step"]:
                self.train_losses.append(float(record.tensors["loss"]))
            return None
        valid = record.tensors.get("valid_loss", record.tensors.get("loss"))
        if record.mode != "EVAL" or valid is None or not self.train_losses:
            return None
        self.checked += 1
        train = float(np.mean(self.train_losses))
        self.train_losses = []
        ratio = (float(valid) - train) / train if train else math.inf
        self.count = self.count + 1 if ratio > self.p["ratio_threshold"] else 0
        if self.count >= self.p["patience"]:
            return (f"valid_loss {float(valid):.4f} vs train loss {train:.4f}: ratio "
                    f"{ratio:.3f} > {self.p['ratio_threshold']:g} for {self.count} "
                    f"evaluation(s)")
        return None


class Overtraining(Rule):
    """[R] Judged per epoch: the mean TRAIN loss of the epoch and its validation loss must
    each improve on their best by more than delta (absolute) within patience_train and
    patience_validation epochs. (AWS saves every 500 steps; per-step batch losses would
    make a patience of 5 a matter of noise.)"""

    def __init__(self, parameters):
        super().__init__(parameters)
        self.best = {"TRAIN": math.inf, "EVAL": math.inf}
        self.stale = {"TRAIN": 0, "EVAL": 0}
        self.train_losses: list[float] = []

    def check(self, record):
        if record.mode == "TRAIN" and "loss" in record.tensors:
            self.train_losses.append(float(record.tensors["loss"]))
            return None
        valid = record.tensors.get("valid_loss", record.tensors.get("loss"))
        if record.mode != "EVAL" or valid is None:
            return None
        self.checked += 1
        epoch_losses = {"EVAL": float(valid)}
        if self.train_losses:
            epoch_losses["TRAIN"] = float(np.mean(self.train_losses))
            self.train_losses = []
        for mode, value in epoch_losses.items():
            if value < self.best[mode] - self.p["delta"]:
                self.best[mode], self.stale[mode] = value, 0
            else:
                self.stale[mode] += 1
            patience = self.p["patience_train" if mode == "TRAIN" else "patience_validation"]
            if self.stale[mode] >= patience:
                which = "training" if mode == "TRAIN" else "validation"
                return (f"{which} loss did not improve on {self.best[mode]:.4f} by "
                        f"{self.p['delta']:g} in {self.stale[mode]} epoch(s)")
        return None


class LossNotDecreasing(Rule):
    """TRAIN losses (ours are per step; EVAL holds one per epoch). [R] Every num_steps
    steps, the mean saved loss of the last num_steps steps is compared with the mean of
    the num_steps before (from the first full pair of windows on): with one saved loss per
    window (AWS saves every 500 steps) this is AWS's comparison of two saved steps; with
    more it is less noisy."""

    def __init__(self, parameters):
        super().__init__(parameters)
        self.losses: list[tuple[int, float]] = []
        self.last_checked: int | None = None

    def check(self, record):
        if record.mode != "TRAIN" or "loss" not in record.tensors:
            return None
        step, n = record.mode_step, self.p["num_steps"]
        self.losses.append((step, float(record.tensors["loss"])))
        if self.last_checked is not None and step < self.last_checked + n:
            return None
        recent = [value for s, value in self.losses if step - n < s <= step]
        before = [(s, value) for s, value in self.losses if step - 2 * n < s <= step - n] \
            or [(s, value) for s, value in self.losses if s <= step - n][-1:]
        if not before or self.losses[0][0] > step - 2 * n + 1:
            return None  # the earlier window is not fully inside the saved steps yet
        self.checked += 1
        self.last_checked = step
        now, past = float(np.mean(recent)), float(np.mean([v for _, v in before]))
        if now >= past * (1 - self.p["diff_percent"] / 100):
            return (f"mean loss {now:.4f} over steps {step - n + 1}-{step} did not decrease "
                    f"from {past:.4f} over steps {before[0][0]}-{before[-1][0]}" +
                    (f" by {self.p['diff_percent']:g} %" if self.p["diff_percent"] else ""))
        return None


class PoorWeightInitialization(Rule):
    """[R] In the first `steps` TRAIN steps: (1) the variance of the ReLU inputs differs
    across layers by more than `threshold` (max/min), (2) some gradient's 5th-95th
    percentile range is narrower than `distribution_range`, or (3) the loss of the first
    step is not beaten within `patience` steps."""

    def __init__(self, parameters):
        super().__init__(parameters)
        self.losses: list[float] = []

    def check(self, record):
        if record.mode != "TRAIN" or record.mode_step >= self.p["steps"]:
            return None
        found = False
        stds = _tensors(record, REDUCTION + "std/")
        variances = {name: float(std) ** 2 for name, std in stds.items() if "_input_" in name}
        if len(variances) >= 2:
            found = True
            low = min(variances, key=variances.get)
            high = max(variances, key=variances.get)
            ratio = variances[high] / max(variances[low], 1e-30)
            if ratio > self.p["threshold"]:
                return (f"ReLU input variance ranges from {variances[low]:.3g} ({low}) to "
                        f"{variances[high]:.3g} ({high}): ratio {ratio:.3g} > "
                        f"{self.p['threshold']:g}")
        low5, high95 = (_tensors(record, probe_name(p, "gradient/")) for p in ("p05", "p95"))
        for name in low5.keys() & high95.keys():
            found = True
            spread = float(high95[name]) - float(low5[name])
            if spread < self.p["distribution_range"]:
                return (f"gradient/{name}: 5th-95th percentile range {spread:.3g} < "
                        f"{self.p['distribution_range']:g}")
        if "loss" in record.tensors:
            found = True
            self.losses.append(float(record.tensors["loss"]))
            patience = self.p["patience"]
            if len(self.losses) == patience + 1 and min(self.losses[1:]) >= self.losses[0]:
                return (f"the loss did not go below the first step's {self.losses[0]:.4f} "
                        f"in the next {patience} steps")
        self.checked += found
        return None


class DeadRelu(Rule):
    def check(self, record):
        activity = _tensors(record, probe_name("active_fraction", ""))
        if not activity:
            return None
        self.checked += 1
        for name, fractions in activity.items():
            dead = float(np.mean(fractions * 100 < self.p["threshold_inactivity"])) * 100
            if dead > self.p["threshold_layer"]:
                return (f"{name}: {dead:.0f} % of {fractions.size} units active for under "
                        f"{self.p['threshold_inactivity']:g} % of inputs (> "
                        f"{self.p['threshold_layer']:g} %)")
        return None


class ClassImbalance(Rule):
    """[R] Class counts accumulate over all saved steps (only classes seen count).
    Mispredictions are judged over the latest `samples` saved predictions and only for
    classes with at least MIN_CLASS_SAMPLES there: early guesses must not count forever,
    and two wrong answers out of three say nothing."""
    MIN_CLASS_SAMPLES = 10

    def __init__(self, parameters):
        super().__init__(parameters)
        self.counts: dict[int, int] = defaultdict(int)
        self.recent: deque[tuple[int, bool]] = deque(maxlen=int(parameters["samples"]))

    def check(self, record):
        labels, predictions = record.tensors.get("labels"), record.tensors.get("predictions")
        if labels is None or predictions is None:
            return None
        for label, prediction in zip(labels.ravel().tolist(), predictions.ravel().tolist()):
            self.counts[label] += 1
            self.recent.append((label, label == prediction))
        if sum(self.counts.values()) < self.p["samples"]:
            return None
        self.checked += 1
        most = max(self.counts, key=self.counts.get)
        least = min(self.counts, key=self.counts.get)
        if self.counts[most] / self.counts[least] > self.p["threshold_imbalance"]:
            return (f"class {most} has {self.counts[most]} samples, class {least} only "
                    f"{self.counts[least]} (ratio > {self.p['threshold_imbalance']:g})")
        seen: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for label, right in self.recent:
            seen[label][0] += 1
            seen[label][1] += right
        for label, (count, right) in sorted(seen.items()):
            wrong = 1 - right / count
            if count >= self.MIN_CLASS_SAMPLES and wrong > self.p["threshold_misprediction"]:
                return (f"class {label} is mispredicted {wrong:.0%} of the time in its last "
                        f"{count} saved samples (> {self.p['threshold_misprediction']:g})")
        return None

    def quiet(self):
        seen = sum(self.counts.values())
        if seen < self.p["samples"]:
            return f"only {seen} labelled samples saved, under samples={self.p['samples']}"
        return super().quiet()


class WeightUpdateRatio(Rule):
    """||w_s - w_p|| / (||w_p|| + epsilon) between consecutive saved steps, trained
    weights only (a frozen weight's ratio is 0 by design, not a problem)."""

    def __init__(self, parameters):
        super().__init__(parameters)
        self.previous_norms: dict[str, float] = {}

    def check(self, record):
        updates = _tensors(record, probe_name("update_l2", ""))
        norms = {name: float(value) for name, value in
                 _tensors(record, REDUCTION + "l2/").items()}
        finding = None
        for name, update in updates.items():
            if name not in self.previous_norms:
                continue
            ratio = float(update) / (self.previous_norms[name] + self.p["epsilon"])
            if ratio > self.p["large_threshold"] or ratio < self.p["small_threshold"]:
                finding = (f"{name}: update/weight ratio {ratio:.3g} outside "
                           f"[{self.p['small_threshold']:g}, {self.p['large_threshold']:g}]")
                break
        if updates.keys() & self.previous_norms.keys():
            self.checked += 1
        self.previous_norms.update(norms)
        return finding


class AllZero(Rule):
    def check(self, record):
        fractions = _tensors(record, probe_name("zero_fraction", ""))
        if not fractions:
            return None
        self.checked += 1
        for name, fraction in fractions.items():
            if float(fraction) * 100 >= self.p["threshold"]:
                return f"{name} is {float(fraction):.0%} zeros (>= {self.p['threshold']:g} %)"
        return None


class StalledTrainingRule(Rule):
    """Offline: the gap between saved steps. Online, `dogbreed.debugging.hook` also watches the
    clock from a thread, since a stalled loop saves nothing that could be checked."""

    def __init__(self, parameters):
        super().__init__(parameters)
        self.last_time: float | None = None

    def check(self, record):
        self.checked += 1
        gap = record.wall_time - self.last_time if self.last_time is not None else 0.0
        self.last_time = record.wall_time
        if gap > self.p["threshold"]:
            return (f"no step saved for {gap:.0f} s before step {record.step} (threshold "
                    f"{self.p['threshold']:g} s)")
        return None


RULE_CLASSES = {rule.__name__: rule for rule in (
    VanishingGradient, ExplodingTensor, Overfit, Overtraining, LossNotDecreasing,
    PoorWeightInitialization, DeadRelu, ClassImbalance, WeightUpdateRatio, AllZero,
    StalledTrainingRule)}
assert RULE_CLASSES.keys() == SPECS.keys()


@dataclass
class RuleResult:
    rule: str
    action: str
    parameters: dict[str, Any]
    status: str = "InProgress"
    step: int | None = None
    evidence: str = ""
    steps_checked: int = 0

    def line(self) -> str:
        return f"DebuggerRule {self.rule}: {self.status} - {self.evidence}"


@dataclass
class RuleRunner:
    """The chosen rules over a stream of steps; `observe` returns the results that fired
    on that step (so the hook can act on them)."""
    actions: dict[str, str]  # rule -> log | stop
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Any = print

    def __post_init__(self):
        self.lock = threading.Lock()  # the stall watchdog's thread reports too
        self.rules: dict[str, Rule] = {}
        self.results: dict[str, RuleResult] = {}
        for name, action in self.actions.items():
            parameters = {**SPECS[name].defaults, **self.overrides.get(name, {})}
            self.rules[name] = RULE_CLASSES[name](parameters)
            self.results[name] = RuleResult(name, action, parameters)

    def observe(self, record: TraceStep) -> list[RuleResult]:
        with self.lock:
            return self._observe(record)

    def _observe(self, record: TraceStep) -> list[RuleResult]:
        fired = []
        for name, rule in self.rules.items():
            result = self.results[name]
            if result.status != "InProgress":
                continue
            try:
                evidence = rule.check(record)
            except Exception as error:  # a rule's bug must not end the training job
                result.status, result.step = "Error", record.step
                result.evidence = f"{type(error).__name__}: {error}"
                self.log(result.line(), flush=True)
                continue
            if evidence is not None:
                result.status, result.step, result.evidence = "IssuesFound", record.step, \
                    f"at step {record.step} ({record.mode}): {evidence}"
                self.log(result.line(), flush=True)
                fired.append(result)
        return fired

    def finish(self) -> list[RuleResult]:
        """Close the rules that are still open (NoIssuesFound), log them, return all."""
        with self.lock:
            return self._finish()

    def _finish(self) -> list[RuleResult]:
        for name, result in self.results.items():
            result.steps_checked = self.rules[name].checked
            if result.status == "InProgress":
                result.status, result.evidence = "NoIssuesFound", self.rules[name].quiet()
                self.log(result.line(), flush=True)
        return list(self.results.values())

    def write(self, path: Path) -> None:
        with self.lock:
            write_results(list(self.results.values()), path)

    def observe_time(self, now: float, last_step_time: float) -> RuleResult | None:
        """StalledTrainingRule's watch from the hook's thread."""
        with self.lock:
            return self._observe_time(now, last_step_time)

    def _observe_time(self, now: float, last_step_time: float) -> RuleResult | None:
        result = self.results.get("StalledTrainingRule")
        if result is None or result.status != "InProgress":
            return None
        threshold = result.parameters["threshold"]
        if now - last_step_time > threshold:
            result.status = "IssuesFound"
            result.evidence = (f"no step finished for {now - last_step_time:.0f} s "
                               f"(threshold {threshold:g} s)")
            self.log(result.line(), flush=True)
            return result
        return None


def write_results(results: list[RuleResult], path: Path) -> None:
    """Whole or not at all; each thread its own temporary file (two threads may write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"rules": [dict(vars(result)) for result in results]}
    temporary = path.with_name(f"{path.name}.{threading.get_ident()}.tmp")
    temporary.write_text(json.dumps(document, indent=1))
    temporary.replace(path)


def evaluate_trace(trace_dir: Path, actions: dict[str, str],
                   overrides: dict[str, dict[str, Any]] | None = None,
                   log=print) -> list[RuleResult]:
    runner = RuleRunner(actions, overrides or {}, log)
    for record in iter_trace(trace_dir):
        runner.observe(record)
    return runner.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.debugging.rules",
        description="Evaluate SageMaker Debugger's built-in rules on a saved trace "
                    "(output/data/debug/ of a job). A rule can only judge the tensors the "
                    "trace holds: run the job with `rules=` to save what each rule needs.")
    parser.add_argument("trace_dir", type=Path)
    parser.add_argument("--rules", default=",".join(SPECS),
                        help="comma list of rules (default: all)")
    parser.add_argument("--parameters", default="",
                        help="overrides, e.g. LossNotDecreasing.num_steps=20")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        names = [name.strip() for name in args.rules.split(",") if name.strip()]
        unknown = [name for name in names if name not in SPECS]
        if unknown:
            raise ValueError(f"unknown rule(s) {', '.join(unknown)}; known: "
                             f"{', '.join(SPECS)}")
        results = evaluate_trace(args.trace_dir, dict.fromkeys(names, "log"),
                                 parse_rule_parameters(args.parameters))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        write_results(results, args.json)
    return 1 if any(result.status == "IssuesFound" for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
