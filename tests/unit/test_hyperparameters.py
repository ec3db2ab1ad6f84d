"""One table per hyperparameter (`dogbreed.hyperparameters.SPECS`): the dataclass, the
parser and the README's table all come from it, so they cannot drift apart."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from dogbreed.hyperparameters import SPECS, Hyperparameters, parse_hyperparameters, readme_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_spec_table():
    lines = README.read_text().splitlines()
    start = lines.index("| name | default | allowed | meaning |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    assert "\n".join(lines[start:end]) == readme_table(), (
        "README.md's hyperparameter table differs from SPECS: paste the output of "
        "`python -m dogbreed.hyperparameters` over it")


def test_every_spec_is_a_field_with_its_default_and_parses_its_own_default():
    assert [f.name for f in fields(Hyperparameters)] == [spec.attribute for spec in SPECS]
    defaults = Hyperparameters()
    for spec in SPECS:
        assert getattr(defaults, spec.attribute) == spec.default
    # Each default, sent as SageMaker sends it (a string), parses back to itself.
    assert parse_hyperparameters({spec.name: str(spec.default) for spec in SPECS
                                  if spec.default != ""}) == defaults


def test_bounds_are_inclusive_and_named_in_the_error():
    for spec in SPECS:
        if spec.kind == "int":
            low, high = int(spec.low), int(spec.high)
            assert getattr(parse_hyperparameters({spec.name: str(low)}), spec.attribute) == low
            assert getattr(parse_hyperparameters({spec.name: str(high)}), spec.attribute) == high
            try:
                parse_hyperparameters({spec.name: str(high + 1)})
                raise AssertionError(f"{spec.name}={high + 1} was accepted")
            except ValueError as error:
                assert f"hyperparameter {spec.name} must be between" in str(error)
