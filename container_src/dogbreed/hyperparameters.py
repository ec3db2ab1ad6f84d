"""The training job's hyperparameters: names, defaults, ranges, and their validation.

SageMaker hands hyperparameters over as strings (the toolkit JSON-decodes them, so "3"
arrives as 3). A typo or an out-of-range value must fail the job at once with a message
that names the key, not after an hour of training, so everything is checked here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


class HyperparameterError(ValueError):
    """A hyperparameter the job cannot run with; the message says which and why."""


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    trainable: str = "layer4"
    pretrained: str = "imagenet"
    image_size: int = 224
    label_smoothing: float = 0.1
    patience: int = 3
    seed: int = 0
    num_workers: str = "auto"
    amp: str = "auto"
    debugger: str = "on"
    debugger_collections: str = "losses,metrics"
    debugger_save_interval: int = 10
    rules: str = ""
    rule_parameters: str = ""
    profiler: str = "on"
    profiler_interval_ms: int = 500
    profiler_start_step: int = 5
    profiler_num_steps: int = 0
    deterministic: str = "off"
    gradient_compression: str = "off"

    def as_dict(self) -> dict[str, Any]:
        """Kebab-case names, as the user wrote them."""
        return {name.replace("_", "-"): value for name, value in asdict(self).items()}


CHOICES = {
    "optimizer": ("adamw", "adam", "sgd"),
    "trainable": ("fc", "layer4", "all"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "debugger": ("on", "off"),
    "profiler": ("on", "off"),
    "deterministic": ("on", "off"),
    "gradient_compression": ("off", "bf16"),
}
# What the debugger hook can save, named as SageMaker Debugger names its collections.
DEBUGGER_COLLECTIONS = ("losses", "metrics", "weights", "biases", "gradients", "relu_input",
                        "outputs", "labels")
# Inclusive bounds; lr's lower bound is exclusive (checked separately).
INT_RANGES = {
    "epochs": (1, 1000),
    "batch_size": (1, 4096),
    "image_size": (32, 1024),
    "patience": (0, 1000),
    "seed": (0, 2**32 - 1),
    "debugger_save_interval": (1, 1_000_000),
    "profiler_interval_ms": (50, 60_000),
    "profiler_start_step": (0, 10_000_000),
    "profiler_num_steps": (0, 1000),
}
FLOAT_RANGES = {
    "lr": (0.0, 10.0),
    "weight_decay": (0.0, 1.0),
    "label_smoothing": (0.0, 0.99),
}
MAX_NUM_WORKERS = 64


def parse_hyperparameters(raw: dict[str, Any]) -> Hyperparameters:
    """Validate `raw` (kebab-case keys, strings or JSON-decoded values) into Hyperparameters.

    Keys SageMaker adds (`sagemaker_*`, `_tuning_objective_metric` and other `_`-prefixed
    ones) are ignored; any other unknown key is an error, because a misspelt
    hyperparameter silently falling back to its default wastes a training budget.
    """
    known = {field.name.replace("_", "-"): field.name for field in fields(Hyperparameters)}
    values: dict[str, Any] = {}
    unknown = []
    for key, value in raw.items():
        if key.startswith(("sagemaker_", "_")):
            continue
        if key not in known:
            unknown.append(key)
            continue
        values[known[key]] = _parse_value(known[key], value)
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameter(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}")
    return Hyperparameters(**values)


def _parse_value(name: str, value: Any) -> Any:
    key = name.replace("_", "-")
    if name in INT_RANGES:
        return _in_range(key, _as_int(key, value), *INT_RANGES[name])
    if name in FLOAT_RANGES:
        number = _in_range(key, _as_float(key, value), *FLOAT_RANGES[name])
        if name == "lr" and number <= 0:
            raise HyperparameterError(f"hyperparameter lr must be > 0, got {value!r}")
        return number
    if name == "amp" and str(value).strip().lower() in ("true", "false"):
        return "auto" if str(value).strip().lower() == "true" else "off"
    if name in ("debugger", "profiler", "deterministic") and str(value).strip().lower() in ("true", "false"):
        return "on" if str(value).strip().lower() == "true" else "off"
    if name == "rules":
        return _parse_rules(key, value)
    if name == "rule_parameters":
        from dogbreed.rule_specs import parse_rule_parameters
        try:
            parse_rule_parameters(str(value))
        except ValueError as error:
            raise HyperparameterError(f"hyperparameter {key}: {error}") from None
        return ",".join(p.strip() for p in str(value).split(",") if p.strip())
    if name == "debugger_collections":
        names = [part.strip().lower() for part in str(value).split(",") if part.strip()]
        wrong = [part for part in names if part not in DEBUGGER_COLLECTIONS]
        if wrong:
            raise HyperparameterError(
                f"hyperparameter {key}: unknown collection(s) {', '.join(wrong)}; known: "
                f"{', '.join(DEBUGGER_COLLECTIONS)}")
        return ",".join(dict.fromkeys(names))
    if name in CHOICES:
        text = str(value).strip().lower()
        if text not in CHOICES[name]:
            raise HyperparameterError(
                f"hyperparameter {key} must be one of {', '.join(CHOICES[name])}, got {value!r}")
        return text
    if name == "num_workers":
        if str(value).strip().lower() == "auto":
            return "auto"
        return str(_in_range(key, _as_int(key, value), 0, MAX_NUM_WORKERS))
    if name == "pretrained":
        text = str(value).strip()
        if not text:
            raise HyperparameterError("hyperparameter pretrained must not be empty: "
                                      "use imagenet, none, or a path to a state_dict")
        return text.lower() if text.lower() in ("imagenet", "none") else text
    raise AssertionError(f"no parser for {name}")


def _parse_rules(key: str, value: Any) -> str:
    """`Rule[:action],...` with action log (the default) or stop; normalised spelling.
    The rule names are checked by `dogbreed.rules`, which knows them (torch-free)."""
    from dogbreed.rule_specs import RULE_ACTIONS, RULE_NAMES
    entries = []
    for part in filter(None, (p.strip() for p in str(value).split(","))):
        name, _, action = part.partition(":")
        canonical = {n.lower(): n for n in RULE_NAMES}.get(name.strip().lower())
        if canonical is None:
            raise HyperparameterError(f"hyperparameter {key}: unknown rule {name.strip()!r}; "
                                      f"known: {', '.join(RULE_NAMES)}")
        action = action.strip().lower() or "log"
        if action not in RULE_ACTIONS:
            raise HyperparameterError(f"hyperparameter {key}: rule {canonical} has action "
                                      f"{action!r}; use one of {', '.join(RULE_ACTIONS)}")
        entries.append(f"{canonical}:{action}")
    return ",".join(dict.fromkeys(entries))


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise HyperparameterError(f"hyperparameter {key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(f"hyperparameter {key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise HyperparameterError(f"hyperparameter {key} must be finite, got {value!r}")
    return number


def _as_int(key: str, value: Any) -> int:
    number = _as_float(key, value)
    if number != int(number):
        raise HyperparameterError(f"hyperparameter {key} must be a whole number, got {value!r}")
    return int(number)


def _in_range(key: str, number: float, low: float, high: float) -> Any:
    if not low <= number <= high:
        raise HyperparameterError(
            f"hyperparameter {key} must be between {low:g} and {high:g}, got {number:g}")
    return number
