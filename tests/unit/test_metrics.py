"""The metric lines and SageMaker-style regexes that read them (tuner, metric charts)."""

from __future__ import annotations

import math
import re

from dogbreed.metrics import METRIC_DEFINITIONS, format_epoch_line, format_test_line, parse_metrics


def test_epoch_and_test_lines_round_trip_through_the_regexes():
    values = {"train_loss": 0.81234, "train_accuracy": 0.75, "valid_loss": 0.90123,
              "valid_accuracy": 0.71, "images_per_sec": 55.24}
    line = format_epoch_line(3, values)
    assert line == ("epoch=3 train_loss=0.8123 train_accuracy=0.7500 valid_loss=0.9012 "
                    "valid_accuracy=0.7100 images_per_sec=55.2")
    found = parse_metrics("INFO something\n" + line + "\n" +
                          format_test_line({"test_loss": 0.95211, "test_accuracy": 0.704}))
    assert found == {"epoch": [3.0], "train_loss": [0.8123], "train_accuracy": [0.75],
                     "valid_loss": [0.9012], "valid_accuracy": [0.71],
                     "images_per_sec": [55.2], "test_loss": [0.9521], "test_accuracy": [0.704]}


def test_diverged_losses_are_still_readable():
    values = {"train_loss": math.nan, "train_accuracy": 0.0, "valid_loss": math.inf,
              "valid_accuracy": 0.0, "images_per_sec": 1.0}
    found = parse_metrics(format_epoch_line(1, values))
    assert math.isnan(found["train_loss"][0]) and math.isinf(found["valid_loss"][0])


def test_regexes_are_valid_for_sagemaker_and_do_not_overlap():
    names = [definition["Name"] for definition in METRIC_DEFINITIONS]
    assert len(names) == len(set(names))
    for definition in METRIC_DEFINITIONS:
        assert re.compile(definition["Regex"]).groups == 1
    # "loss=" inside "train_loss=" must not be taken for valid_loss or test_loss.
    assert parse_metrics("train_loss=1.0")["valid_loss"] == []
