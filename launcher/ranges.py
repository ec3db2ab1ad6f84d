"""Hyperparameter ranges as SageMaker defines them, in a form both tuners read.

One spec per hyperparameter: `continuous` or `integer` with min, max and a scaling type
(Auto, Linear, Logarithmic, ReverseLogarithmic), or `categorical` with values. The
SageMaker adapter turns them into the SDK's parameter ranges; the local tuner into Optuna
distributions. On the command line: `NAME=continuous:MIN:MAX[:SCALING]`,
`NAME=integer:MIN:MAX[:SCALING]` or `NAME=categorical:A,B,C`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from launcher.errors import LauncherError

Scaling = Literal["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"]


class HyperparameterRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["continuous", "integer", "categorical"]
    min: float | None = None
    max: float | None = None
    scaling: Scaling = "Auto"
    values: list[str | int | float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "HyperparameterRange":
        if self.type == "categorical":
            if not self.values:
                raise ValueError("a categorical range needs a non-empty `values` list")
            if self.min is not None or self.max is not None:
                raise ValueError("a categorical range takes `values`, not min/max")
            if len(set(map(str, self.values))) != len(self.values):
                raise ValueError("categorical values repeat")
            return self
        if self.values is not None:
            raise ValueError(f"a {self.type} range takes min and max, not `values`")
        if self.min is None or self.max is None:
            raise ValueError(f"a {self.type} range needs both min and max")
        if self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be less than max ({self.max:g})")
        if self.type == "integer" and (self.min != int(self.min) or self.max != int(self.max)):
            raise ValueError("an integer range needs whole-number min and max")
        if self.scaling == "Logarithmic" and self.min <= 0:
            raise ValueError("Logarithmic scaling needs min > 0")
        if self.scaling == "ReverseLogarithmic":
            if self.type == "integer":
                raise ValueError("ReverseLogarithmic scaling is for continuous ranges only")
            if not 0 <= self.min < self.max < 1:
                raise ValueError("ReverseLogarithmic scaling needs 0 <= min < max < 1")
        return self

    def candidates(self) -> list[Any]:
        """Values that bound the range (for validating them as hyperparameters)."""
        if self.type == "categorical":
            return list(self.values)
        if self.type == "integer":
            return [int(self.min), int(self.max)]
        return [self.min, self.max]

    def effective_scaling(self) -> str:
        """What Auto means here: Logarithmic when the range spans 100x or more above zero.

        SageMaker decides Auto itself; the local tuner needs a fixed choice, and learning
        rates and weight decays (the usual wide ranges) are the ones searched in log space.
        """
        if self.scaling != "Auto":
            return self.scaling
        if self.type != "categorical" and self.min > 0 and self.max / self.min >= 100:
            return "Logarithmic"
        return "Linear"

    def describe(self) -> str:
        if self.type == "categorical":
            return f"categorical {', '.join(map(str, self.values))}"
        low, high = (int(self.min), int(self.max)) if self.type == "integer" else (self.min, self.max)
        return f"{self.type} {low:g}..{high:g} ({self.scaling})"


def parse_range_option(option: str) -> tuple[str, HyperparameterRange]:
    """`lr=continuous:1e-4:1e-2:Logarithmic` -> ("lr", range)."""
    name, _, spec = option.partition("=")
    kind, _, rest = spec.partition(":")
    if not name or not rest:
        raise LauncherError(f"--range {option!r}: use NAME=continuous:MIN:MAX[:SCALING], "
                            "NAME=integer:MIN:MAX[:SCALING] or NAME=categorical:A,B,...")
    try:
        if kind == "categorical":
            return name, HyperparameterRange(type=kind, values=[_number_or_text(value)
                                                                for value in rest.split(",")])
        parts = rest.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"expected MIN:MAX[:SCALING], got {rest!r}")
        scaling = parts[2] if len(parts) == 3 else "Auto"
        return name, HyperparameterRange(type=kind, min=float(parts[0]), max=float(parts[1]),
                                         scaling=scaling)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise LauncherError(f"--range {option!r}: {_first_line(error)}") from None


def _number_or_text(value: str) -> str | int | float:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _first_line(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        problem = errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(error)
