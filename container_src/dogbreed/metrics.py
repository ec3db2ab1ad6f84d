"""The metric log lines and the regexes that read them back: the single definition.

SageMaker (metric definitions), the tuner's objective and the local tuner all parse the
job's log with `METRIC_DEFINITIONS`; the training loop writes with the functions below.
No torch import here, so the launcher can use this module on a laptop.
"""

from __future__ import annotations

import math
import re

EPOCH_METRICS = ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy",
                 "images_per_sec")
TEST_METRICS = ("test_loss", "test_accuracy")
# A number as Python's formatting writes it, including nan/inf when training diverges.
_NUMBER = r"([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf))"

METRIC_DEFINITIONS = [{"Name": name, "Regex": rf"\b{name}={_NUMBER}"}
                      for name in ("epoch",) + EPOCH_METRICS + TEST_METRICS]


def format_epoch_line(epoch: int, metrics: dict[str, float]) -> str:
    """`epoch=3 train_loss=0.8123 ... images_per_sec=55.2`"""
    parts = [f"epoch={epoch}"]
    for name in EPOCH_METRICS:
        digits = 1 if name == "images_per_sec" else 4
        parts.append(f"{name}={_format(metrics[name], digits)}")
    return " ".join(parts)


def format_test_line(metrics: dict[str, float]) -> str:
    """`test_loss=0.9521 test_accuracy=0.7040`"""
    return " ".join(f"{name}={_format(metrics[name], 4)}" for name in TEST_METRICS)


def parse_metrics(text: str) -> dict[str, list[float]]:
    """Every value of every defined metric in `text`, in order (what SageMaker would chart)."""
    return {definition["Name"]: [float(value) for value in re.findall(definition["Regex"], text)]
            for definition in METRIC_DEFINITIONS}


def _format(value: float, digits: int) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.{digits}f}"
