"""What the debugger hook saves, where, and how often: from the hyperparameters, and from
`input/config/debughookconfig.json` when SageMaker (or a user) wrote one.

SageMaker writes that file for a job with a `DebuggerHookConfig`: `LocalPath` (where the
trace goes), `HookParameters` (`save_interval`, ...) and `CollectionConfigurations`
(`CollectionName` plus `CollectionParameters` such as `save_interval`, `reductions`,
`save_raw_tensor`). Those collections are saved on top of the hyperparameters' ones, with
their own intervals and reductions. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dogbreed.hyperparameters import DEBUGGER_COLLECTIONS, Hyperparameters
from dogbreed.rule_specs import SPECS, parse_rule_parameters

HOOK_CONFIG_FILE = "debughookconfig.json"
# Saved as reductions unless a config asks for raw tensors too: a ResNet50's weights and
# gradients are 100 MB per saved step.
REDUCED = ("weights", "biases", "gradients", "relu_input")
DEFAULT_REDUCTIONS = ("l2", "mean", "std", "min", "max")
# smdebug's spellings ("l2_norm", "abs_mean") -> what our writer stores.
# Rules that average the training loss over windows or epochs: losses saved every step.
LOSS_RULES = ("LossNotDecreasing", "Overfit", "Overtraining")
KNOWN_REDUCTIONS = ("min", "max", "mean", "std", "variance", "sum", "prod", "l1", "l2")


class DebuggerConfigError(ValueError):
    """A debughookconfig.json the job cannot honour; the message says what is wrong."""


@dataclass(frozen=True)
class CollectionConfig:
    name: str
    save_interval: int
    reductions: tuple[str, ...] = ()  # "abs_mean" is the mean of absolute values
    save_raw: bool = True
    probes: tuple[str, ...] = ()  # extra values a rule needs (dogbreed.debugging.rules)
    first_steps: int = 0  # also save every one of the first N steps

    def saves(self, mode_step: int) -> bool:
        return mode_step < self.first_steps or mode_step % self.save_interval == 0


@dataclass(frozen=True)
class DebuggerConfig:
    out_dir: Path
    collections: dict[str, CollectionConfig]
    rules: dict[str, str] = field(default_factory=dict)  # rule -> action
    rule_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def saving(self, mode_step: int) -> set[str]:
        return {name for name, c in self.collections.items() if c.saves(mode_step)}


def debugger_config(hp: Hyperparameters, config_dir: Path,
                    default_out_dir: Path) -> DebuggerConfig | None:
    """None when the hook has nothing to do."""
    collections: dict[str, CollectionConfig] = {}
    out_dir = default_out_dir
    if hp.debugger == "on":
        for name in filter(None, hp.debugger_collections.split(",")):
            collections[name] = collection_config(name, hp.debugger_save_interval)
    file = config_dir / HOOK_CONFIG_FILE
    if file.is_file():
        out_dir, from_file = _read_hook_config(file, hp.debugger_save_interval)
        collections.update(from_file)
    rules = {name: action or "log" for name, _, action in
             (entry.partition(":") for entry in filter(None, hp.rules.split(",")))}
    overrides = parse_rule_parameters(hp.rule_parameters)
    for rule in rules:
        _add_rule_needs(collections, rule, overrides.get(rule, {}), hp.debugger_save_interval)
    if not collections and not rules:  # StalledTrainingRule reads no collection
        return None
    return DebuggerConfig(Path(out_dir), collections, rules, overrides)


def _add_rule_needs(collections: dict[str, CollectionConfig], rule: str,
                    overrides: dict[str, Any], interval: int) -> None:
    """Enabling a rule turns on the collections it reads, with its probes (and abs_mean
    for VanishingGradient), saved from the first step on when the rule looks there."""
    spec = SPECS[rule]
    needs = spec.needs
    if rule == "AllZero":
        needs = tuple(filter(None, str(overrides.get(
            "collection_names", spec.defaults["collection_names"])).split(",")))
        wrong = [name for name in needs if name not in DEBUGGER_COLLECTIONS]
        if wrong:
            raise DebuggerConfigError(f"AllZero.collection_names: unknown collection(s) "
                                      f"{', '.join(wrong)}")
    first_steps = int(overrides.get("steps", spec.defaults.get("steps", 0))) \
        if spec.first_steps else 0
    for name in needs:
        config = collections.get(name) or collection_config(name, interval)
        if name == "losses" and rule in LOSS_RULES:  # a scalar: every step, for the means
            config = replace(config, save_interval=1)
        reductions = config.reductions
        if rule == "VanishingGradient" and "abs_mean" not in reductions:
            reductions += ("abs_mean",)
        if rule == "PoorWeightInitialization" and name == "relu_input" \
                and "std" not in reductions:
            reductions += ("std",)
        probes = config.probes
        if name in ("gradients", "relu_input", "weights") or rule == "AllZero":
            probes += tuple(p for p in spec.probes if p not in probes and
                            _probe_applies(p, name))
        collections[name] = replace(config, reductions=reductions, probes=probes,
                                    first_steps=max(config.first_steps, first_steps))


def _probe_applies(probe: str, collection: str) -> bool:
    return {"p05": collection == "gradients", "p95": collection == "gradients",
            "active_fraction": collection == "relu_input",
            "update_l2": collection == "weights"}.get(probe, True)


def collection_config(name: str, interval: int) -> CollectionConfig:
    """A collection's defaults: reductions only for the large tensors, values otherwise."""
    if name in REDUCED:
        return CollectionConfig(name, interval, DEFAULT_REDUCTIONS, save_raw=False)
    return CollectionConfig(name, interval)


def _read_hook_config(file: Path, default_interval: int) -> tuple[Path, dict]:
    try:
        document = json.loads(file.read_text())
        hook = {key.lower(): value for key, value in
                (document.get("HookParameters") or {}).items()}
        interval = _positive_int(hook.get("save_interval", default_interval), "save_interval")
        collections = {}
        for entry in document.get("CollectionConfigurations") or []:
            name = str(entry["CollectionName"]).lower()
            if name not in DEBUGGER_COLLECTIONS:
                raise DebuggerConfigError(f"collection {name!r} is not one this hook saves "
                                          f"({', '.join(DEBUGGER_COLLECTIONS)})")
            parameters = {k.lower(): v for k, v in
                          (entry.get("CollectionParameters") or {}).items()}
            config = collection_config(name, _positive_int(
                parameters.get("save_interval", interval), f"{name}.save_interval"))
            if "reductions" in parameters:
                config = replace(config, reductions=_reductions(parameters["reductions"]))
            if "save_raw_tensor" in parameters:
                config = replace(config, save_raw=str(parameters["save_raw_tensor"]).lower()
                                 == "true")
            collections[name] = config
        return Path(document.get("LocalPath") or "/opt/ml/output/tensors"), collections
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DebuggerConfigError(f"{file} cannot be used: {error}") from None


def _positive_int(value: Any, what: str) -> int:
    number = int(str(value))
    if number < 1:
        raise DebuggerConfigError(f"{what} must be at least 1, got {value!r}")
    return number


def _reductions(text: Any) -> tuple[str, ...]:
    found = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        name = part.removesuffix("_norm")
        if name.startswith("abs_") or name not in KNOWN_REDUCTIONS:
            raise DebuggerConfigError(f"reduction {part!r} is not supported (use "
                                      f"{', '.join(KNOWN_REDUCTIONS)}; norms as l1_norm, "
                                      "l2_norm)")
        found.append(name)
    return tuple(found)
