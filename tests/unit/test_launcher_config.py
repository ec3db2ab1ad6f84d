"""The launcher's config file and range syntax: good files load, every bad one is refused
with the dotted key that is wrong."""

from __future__ import annotations

import json

import pytest

from launcher.config import Config, load_config
from launcher.errors import LauncherError
from launcher.ranges import parse_range_option

GOOD_TOML = """
workdir = "somewhere"
[aws]
role_arn = "arn:aws:iam::123456789012:role/SageMakerRole"
bucket = "my-bucket"
[training]
instance_type = "ml.g5.2xlarge"
spot = true
max_wait_seconds = 90000
[training.hyperparameters]
epochs = 3
[tuning]
objective = "valid_loss"
direction = "Minimize"
strategy = "Random"
[tuning.ranges]
lr = { type = "continuous", min = 0.0001, max = 0.1, scaling = "Logarithmic" }
optimizer = { type = "categorical", values = ["adamw", "sgd"] }
"""


def test_the_shipped_configs_load():
    demo = load_config("config/demo.toml")
    assert demo.tuning.ranges["lr"].scaling == "Logarithmic"
    example = load_config("config/sagemaker.example.toml")
    assert example.training.spot and example.tuning.early_stopping == "Auto"


def test_toml_and_yaml_give_the_same_config(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(GOOD_TOML)
    from_toml = load_config(toml)
    import tomllib
    import yaml
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(yaml.safe_dump(tomllib.loads(GOOD_TOML)))
    from_yaml = load_config(yaml_file)
    assert from_toml.model_dump() == from_yaml.model_dump()
    assert from_toml.training.instance_type == "ml.g5.2xlarge"
    assert from_toml.tuning.ranges["optimizer"].values == ["adamw", "sgd"]


def test_metric_definitions_come_from_the_training_program():
    from dogbreed.metrics import METRIC_DEFINITIONS
    assert Config().metric_definitions == METRIC_DEFINITIONS
    names = [d["Name"] for d in Config().metric_definitions]
    assert {"valid_accuracy", "valid_loss", "test_accuracy"} <= set(names)


@pytest.mark.parametrize("text, expected", [
    ("[tuning]\nmax_job = 3\n", "tuning.max_job: unknown key"),
    ("[tuning]\nmax_jobs = 0\n", "tuning.max_jobs: Input should be greater than or equal to 1"),
    ("[tuning]\nobjective = \"accuracy\"\n", "'accuracy' is not a metric the training job logs"),
    ("[tuning]\nstrategy = \"Grid\"\n", "the Grid strategy takes categorical ranges only; lr is "
     "not"),
    ("[tuning]\nmax_jobs = 2\nmax_parallel_jobs = 3\n", "max_parallel_jobs (3) is more than "
     "max_jobs (2)"),
    ("[tuning.ranges]\nlr = { type = \"continuous\", min = 0.1, max = 0.01 }\n",
     "tuning.ranges.lr: min (0.1) must be less than max (0.01)"),
    ("[tuning.ranges]\nlearning-rate = { type = \"continuous\", min = 0.1, max = 1 }\n",
     "unknown hyperparameter(s) learning-rate"),
    ("[tuning.ranges]\nbatch-size = { type = \"categorical\", values = [16, 0] }\n",
     "batch-size"),
    ("[training.hyperparameters]\nepoch = 3\n", "training.hyperparameters: unknown "
     "hyperparameter(s) epoch"),
    ("[training]\nspot = true\nmax_run_seconds = 7200\nmax_wait_seconds = 3600\n",
     "max_wait_seconds must be at least max_run_seconds"),
    ("[aws]\nrole_arn = \"SageMakerRole\"\n", "aws.role_arn: String should match pattern"),
    ("[serving]\ntop_k = 0\n", "serving.top_k"),
    ("[tuning\n", "is not valid TOML"),
])
def test_a_bad_config_names_the_bad_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(LauncherError) as raised:
        load_config(path)
    assert expected in str(raised.value)


def test_missing_and_wrongly_named_config_files(tmp_path):
    with pytest.raises(LauncherError, match="not found"):
        load_config(tmp_path / "nope.toml")
    other = tmp_path / "config.json"
    other.write_text("{}")
    with pytest.raises(LauncherError, match="use .toml, .yaml or .yml"):
        load_config(other)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(LauncherError, match="top level must be a table"):
        load_config(listed)


def test_image_uris_come_from_the_config_or_make_push(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config()
    assert config.image("train", local=True) == "dogbreed-train:latest"
    with pytest.raises(LauncherError, match="run `make build push`"):
        config.image("train")
    (tmp_path / "build").mkdir()
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogbreed-train:v1"
    (tmp_path / "build" / "images.json").write_text(json.dumps({"train": uri}))
    assert config.image("train") == uri
    configured = Config.model_validate({"images": {"serve": "my/serve:1"}})
    assert configured.image("serve", "sagemaker") == "my/serve:1"


def test_range_options_parse_like_the_config():
    name, spec = parse_range_option("lr=continuous:1e-4:1e-2:Logarithmic")
    assert (name, spec.type, spec.min, spec.max, spec.scaling) == \
        ("lr", "continuous", 1e-4, 1e-2, "Logarithmic")
    name, spec = parse_range_option("batch-size=categorical:16,32,64")
    assert spec.values == [16, 32, 64]
    name, spec = parse_range_option("epochs=integer:2:8")
    assert (spec.type, spec.min, spec.max, spec.scaling) == ("integer", 2, 8, "Auto")


@pytest.mark.parametrize("option, expected", [
    ("lr", "use NAME=continuous:MIN:MAX"),
    ("lr=continuous:1:0", "min (1) must be less than max (0)"),
    ("lr=uniform:1:2", "type: Input should be"),
    ("epochs=integer:1.5:3", "whole-number"),
    ("lr=continuous:0:1:Logarithmic", "Logarithmic scaling needs min > 0"),
    ("momentum=continuous:0.5:1.5:ReverseLogarithmic", "0 <= min < max < 1"),
    ("lr=continuous:1:2:3:4", "expected MIN:MAX[:SCALING]"),
    ("opt=categorical:a,a", "categorical values repeat"),
])
def test_bad_range_options_are_refused(option, expected):
    with pytest.raises(LauncherError) as raised:
        parse_range_option(option)
    assert expected in str(raised.value)


def test_overrides_are_validated_like_the_file():
    tuning = Config().tuning
    assert tuning.with_overrides(max_jobs=3, strategy=None).max_jobs == 3
    with pytest.raises(LauncherError, match="tuning.max_parallel_jobs"):
        tuning.with_overrides(max_parallel_jobs=0)
