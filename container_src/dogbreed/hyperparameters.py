"""The training job's hyperparameters: one table (`SPECS`) says each one's name, default,
type, allowed values and meaning; parsing, validation, the launcher's checks and the
README's table all come from it.

SageMaker hands hyperparameters over as strings (the toolkit JSON-decodes them, so "3"
arrives as 3). A typo or an out-of-range value must fail the job at once with a message
that names the key, not after an hour of training, so everything is checked here.

    python -m dogbreed.hyperparameters    # the README's table, from SPECS
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, make_dataclass
from typing import Any, Callable


class HyperparameterError(ValueError):
    """A hyperparameter the job cannot run with; the message says which and why."""


# What the debugger hook can save, named as SageMaker Debugger names its collections.
DEBUGGER_COLLECTIONS = ("losses", "metrics", "weights", "biases", "gradients", "relu_input",
                        "outputs", "labels")
ON_OFF = ("on", "off")


@dataclass(frozen=True)
class Spec:
    """One hyperparameter. `kind`: int, float, choice, or custom (then `parse` checks it);
    `allowed` is the README's wording where the bounds or choices do not say it all."""
    name: str
    default: Any
    kind: str
    meaning: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    allowed: str = ""
    parse: Callable[["Spec", Any], Any] | None = None

    @property
    def attribute(self) -> str:
        return self.name.replace("-", "_")

    @property
    def python_type(self) -> type:
        return {"int": int, "float": float}.get(self.kind, str)

    def readme_row(self) -> str:
        default = ("(none)" if self.default == "" else f"`{self.default}`"
                   if isinstance(self.default, str) else f"{self.default:g}")
        return f"| `{self.name}` | {default} | {self.allowed_text()} | {self.meaning} |"

    def allowed_text(self) -> str:
        if self.allowed:
            return self.allowed
        if self.choices:
            text = ", ".join(f"`{choice}`" for choice in self.choices)
            return text + (" (`true`/`false`)" if self.choices in (ON_OFF, AMP_CHOICES) else "")
        def number(value: float) -> str:
            return str(int(value)) if self.kind == "int" else f"{value:g}"
        high = "" if self.high is None or self.high >= 10**7 else number(self.high)
        if self.name == "lr":  # its lower bound is exclusive
            return f"(0, {high}]"
        return f"{number(self.low)}..{high}"


def _parse_number(spec: Spec, value: Any) -> Any:
    number = _as_int(spec.name, value) if spec.kind == "int" else _as_float(spec.name, value)
    number = _in_range(spec.name, number, spec.low, spec.high)
    if spec.name == "lr" and number <= 0:
        raise HyperparameterError(f"hyperparameter lr must be > 0, got {value!r}")
    return number


def _parse_choice(spec: Spec, value: Any) -> str:
    text = str(value).strip().lower()
    if spec.choices == ON_OFF and text in ("true", "false"):
        return "on" if text == "true" else "off"
    if spec.choices == AMP_CHOICES and text in ("true", "false"):
        return "auto" if text == "true" else "off"
    if text not in spec.choices:
        raise HyperparameterError(f"hyperparameter {spec.name} must be one of "
                                  f"{', '.join(spec.choices)}, got {value!r}")
    return text


def _parse_num_workers(spec: Spec, value: Any) -> str:
    if str(value).strip().lower() == "auto":
        return "auto"
    return str(_in_range(spec.name, _as_int(spec.name, value), 0, MAX_NUM_WORKERS))


def _parse_pretrained(spec: Spec, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise HyperparameterError("hyperparameter pretrained must not be empty: "
                                  "use imagenet, none, or a path to a state_dict")
    return text.lower() if text.lower() in ("imagenet", "none") else text


def _parse_collections(spec: Spec, value: Any) -> str:
    names = [part.strip().lower() for part in str(value).split(",") if part.strip()]
    wrong = [part for part in names if part not in DEBUGGER_COLLECTIONS]
    if wrong:
        raise HyperparameterError(
            f"hyperparameter {spec.name}: unknown collection(s) {', '.join(wrong)}; known: "
            f"{', '.join(DEBUGGER_COLLECTIONS)}")
    return ",".join(dict.fromkeys(names))


def _parse_rules(spec: Spec, value: Any) -> str:
    """`Rule[:action],...` with action log (the default) or stop; normalised spelling.
    The rule names are checked by `dogbreed.rule_specs`, which knows them (torch-free)."""
    from dogbreed.rule_specs import RULE_ACTIONS, RULE_NAMES
    entries = []
    for part in filter(None, (p.strip() for p in str(value).split(","))):
        name, _, action = part.partition(":")
        canonical = {n.lower(): n for n in RULE_NAMES}.get(name.strip().lower())
        if canonical is None:
            raise HyperparameterError(f"hyperparameter {spec.name}: unknown rule "
                                      f"{name.strip()!r}; known: {', '.join(RULE_NAMES)}")
        action = action.strip().lower() or "log"
        if action not in RULE_ACTIONS:
            raise HyperparameterError(f"hyperparameter {spec.name}: rule {canonical} has action "
                                      f"{action!r}; use one of {', '.join(RULE_ACTIONS)}")
        entries.append(f"{canonical}:{action}")
    return ",".join(dict.fromkeys(entries))


def _parse_rule_parameters(spec: Spec, value: Any) -> str:
    from dogbreed.rule_specs import parse_rule_parameters
    try:
        parse_rule_parameters(str(value))
    except ValueError as error:
        raise HyperparameterError(f"hyperparameter {spec.name}: {error}") from None
    return ",".join(p.strip() for p in str(value).split(",") if p.strip())


MAX_NUM_WORKERS = 64
AMP_CHOICES = ("auto", "bf16", "fp16", "off")

SPECS: tuple[Spec, ...] = (
    Spec("epochs", 10, "int", "total epochs, also across a resume", 1, 1000),
    Spec("batch-size", 32, "int", "per worker (GPU or process)", 1, 4096),
    Spec("lr", 0.001, "float", "the head's learning rate; unfrozen pretrained layers get "
         "lr x 0.1", 0.0, 10.0),
    Spec("weight-decay", 0.0001, "float", "not applied to biases and BatchNorm", 0.0, 1.0),
    Spec("optimizer", "adamw", "choice", "sgd is Nesterov with momentum 0.9",
         choices=("adamw", "adam", "sgd")),
    Spec("trainable", "layer4", "choice", "what trains; frozen BatchNorm keeps its statistics",
         choices=("fc", "layer4", "all")),
    Spec("pretrained", "imagenet", "custom",
         "ImageNet weights from the local torch cache (the image fills it at build time; "
         "never downloaded by a job), random init, or a ResNet50 state_dict file (`.pth` "
         "read with `weights_only=True`, or `.safetensors`)",
         allowed="`imagenet`, `none`, a path", parse=_parse_pretrained),
    Spec("image-size", 224, "int", "crop size; eval resizes the short side to size/0.875 "
         "first", 32, 1024),
    Spec("label-smoothing", 0.1, "float", "training objective only; reported losses are "
         "plain cross-entropy", 0.0, 0.99),
    Spec("patience", 3, "int", "early stopping on `valid_loss`; 0 = off", 0, 1000),
    Spec("seed", 0, "int", "data order, augmentation and init", 0, 2**32 - 1,
         allowed="0..2^32-1"),
    Spec("num-workers", "auto", "custom", "loader processes; auto = 1 on CPU, min(8, CPUs "
         "per GPU - 1) on GPU", allowed="`auto`, 0..64", parse=_parse_num_workers),
    Spec("data-pipeline", "auto", "choice", "cached: every image decoded once per job into a "
         "uint8 store, cropped, flipped and normalised on the device (GPU or CPU); features "
         "(trainable=fc only): the frozen backbone run once per image on that store, the "
         "epochs train the head alone on its features, without augmentation; pil: decoded "
         "and augmented again in every epoch by loader processes; auto = features with "
         "trainable=fc (unless the debugger collects relu_input, weights or biases), else "
         "cached; pil with a warning when the store fits nowhere",
         choices=("auto", "features", "cached", "pil")),
    Spec("compile", "auto", "choice", "torch.compile the training step (not evaluation); "
         "auto = on on a GPU for a job of at least 1,000,000 training images per worker "
         "(epochs x images), where the compile can pay back, else off; on needs g++ and "
         "Python's headers in the image and no relu_input collection",
         choices=("auto", "on", "off")),
    Spec("amp", "auto", "choice", "auto = bf16 where the GPU has it, else fp16; always off "
         "on CPU. channels_last is used on GPU", choices=AMP_CHOICES),
    Spec("debugger", "on", "choice", "the debugger hook (below)", choices=ON_OFF),
    Spec("debugger-collections", "losses,metrics", "custom", "what the hook saves",
         allowed="comma list of " + ", ".join(f"`{c}`" for c in DEBUGGER_COLLECTIONS),
         parse=_parse_collections),
    Spec("debugger-save-interval", 10, "int", "save every N training steps", 1, 1_000_000),
    Spec("rules", "", "custom", "built-in debugger rules evaluated during the job (below); "
         "turns on the collections they read", allowed="comma list of `Rule[:log\\|stop]`",
         parse=_parse_rules),
    Spec("rule-parameters", "", "custom", "override a debugger or profiler rule's default "
         "parameter; numbers checked (counts whole >= 1, others finite >= 0)",
         allowed="comma list of `Rule.param=value` (a list value continues after commas: "
         "`AllZero.collection_names=weights,biases`)", parse=_parse_rule_parameters),
    Spec("profiler", "on", "choice", "system sampler and step timeline (below)",
         choices=ON_OFF),
    Spec("profiler-interval-ms", 500, "int", "system sampling period", 50, 60_000),
    Spec("profiler-start-step", 5, "int", "first global step of the torch.profiler window",
         0, 10_000_000),
    Spec("profiler-num-steps", 0, "int", "steps in the torch.profiler window; 0 = no trace",
         0, 1000),
    Spec("deterministic", "off", "choice", "deterministic cuDNN/cuBLAS kernels on GPUs "
         "(slower; an op without one fails the job); CPU runs are deterministic either way",
         choices=ON_OFF),
    Spec("gradient-compression", "off", "choice", "DDP's bf16 gradient compression: half "
         "the bytes between hosts (multi-host jobs)", choices=("off", "bf16")),
)
SPECS_BY_NAME = {spec.name: spec for spec in SPECS}


def _as_dict(self) -> dict[str, Any]:
    """Kebab-case names, as the user wrote them."""
    return {name.replace("_", "-"): value for name, value in asdict(self).items()}


# The parsed values, as typed attributes (hp.batch_size); fields and defaults from SPECS.
Hyperparameters = make_dataclass(
    "Hyperparameters", [(spec.attribute, spec.python_type, spec.default) for spec in SPECS],
    frozen=True, namespace={"as_dict": _as_dict, "__module__": __name__,
                            "__doc__": "A job's hyperparameters, validated (see SPECS)."})


def parse_hyperparameters(raw: dict[str, Any]) -> Hyperparameters:
    """Validate `raw` (kebab-case keys, strings or JSON-decoded values) into Hyperparameters.

    Keys SageMaker adds (`sagemaker_*`, `_tuning_objective_metric` and other `_`-prefixed
    ones) are ignored; any other unknown key is an error, because a misspelt
    hyperparameter silently falling back to its default wastes a training budget.
    """
    values: dict[str, Any] = {}
    unknown = []
    for key, value in raw.items():
        if key.startswith(("sagemaker_", "_")):
            continue
        spec = SPECS_BY_NAME.get(key)
        if spec is None:
            unknown.append(key)
            continue
        values[spec.attribute] = parse_value(spec, value)
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameter(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(SPECS_BY_NAME))}")
    return Hyperparameters(**values)


def parse_value(spec: Spec, value: Any) -> Any:
    if spec.parse is not None:
        return spec.parse(spec, value)
    if spec.kind in ("int", "float"):
        return _parse_number(spec, value)
    return _parse_choice(spec, value)


def readme_table() -> str:
    """The README's hyperparameter table (a test keeps the two equal)."""
    header = "| name | default | allowed | meaning |\n|---|---|---|---|"
    return "\n".join([header, *(spec.readme_row() for spec in SPECS)])


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


if __name__ == "__main__":
    print(readme_table())
