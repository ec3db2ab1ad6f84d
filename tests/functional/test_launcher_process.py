"""The launcher end to end on the process backend (the demo's path), run as a user runs it:
`python -m launcher ...` in a child process, with no AWS credentials and every non-local
request sent to a closed port, so reaching for AWS would fail the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there
CONFIG = """
workdir = "{workdir}"
[data]
local_dir = "{data}"
[training.hyperparameters]
epochs = 2
image-size = 48
pretrained = "none"
trainable = "all"
patience = 0
batch-size = 16
[tuning]
strategy = "Random"
max_jobs = 2
max_parallel_jobs = 2
[tuning.ranges]
lr = {{ type = "continuous", min = 0.0005, max = 0.003, scaling = "Logarithmic" }}
[serving]
workers = 1
"""


def offline_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(HTTP_PROXY=NOWHERE, HTTPS_PROXY=NOWHERE, http_proxy=NOWHERE, https_proxy=NOWHERE,
               NO_PROXY="localhost,127.0.0.1", no_proxy="localhost,127.0.0.1",
               AWS_CONFIG_FILE=str(home / "none"), AWS_SHARED_CREDENTIALS_FILE=str(home / "none"),
               AWS_EC2_METADATA_DISABLED="true", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return env


def launcher(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd,
                          env=offline_env(cwd), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder with a config, as a user's working directory (PYTHONPATH finds the code)."""
    root = tmp_path_factory.mktemp("launcher_process")
    (root / "launcher.toml").write_text(CONFIG.format(workdir=root / "runs",
                                                      data=root / "data"))
    return root


@pytest.fixture(scope="module")
def flow(project) -> dict[str, subprocess.CompletedProcess]:
    """data -> tune -> train (best) -> deploy -> predict -> report -> cleanup, once."""
    steps = {}
    steps["data"] = launcher("data", "--synthetic", "--classes", "3", "--images-per-class", "20",
                             cwd=project)
    steps["tune"] = launcher("tune", "--seed", "0", cwd=project)
    best = project / "runs" / "tuning" / "dogbreed-tune" / "best.json"
    steps["train"] = launcher("train", "--hyperparameters", str(best), "--name", "final",
                              cwd=project)
    steps["deploy"] = launcher("deploy", cwd=project)
    state_file = project / "runs" / "state.json"
    steps["state_deployed"] = json.loads(state_file.read_text()) if state_file.is_file() else {}
    image = sorted((project / "data" / "test" / "002.Afghan_hound").glob("*.jpg"))[0]
    steps["predict"] = launcher("predict", str(image), "--top-k", "2", "--json",
                                str(project / "answers.json"), cwd=project)
    steps["refused"] = launcher("predict", str(
        project / "data" / "train" / "001.Affenpinscher" / "truncated_0000.jpg"), cwd=project)
    steps["report"] = launcher("report", cwd=project)
    steps["cleanup"] = launcher("cleanup", cwd=project)
    return steps


def test_data_writes_and_validates_sample_data(flow, project):
    assert flow["data"].returncode == 0, flow["data"].stderr
    report = json.loads((project / "data" / "validation.json").read_text())
    assert report["splits"]["train"]["classes"] == 3
    assert report["splits"]["train"]["images"] == 3 * 16
    assert sorted(report["unreadable"]) == ["train/001.Affenpinscher/not_an_image_0000.jpg",
                                            "train/001.Affenpinscher/truncated_0000.jpg"]
    assert "unreadable (training skips them):" in flow["data"].stdout


def test_tune_runs_the_trials_and_writes_table_plot_and_best(flow, project):
    assert flow["tune"].returncode == 0, flow["tune"].stdout + flow["tune"].stderr
    study = project / "runs" / "tuning" / "dogbreed-tune"
    best = json.loads((study / "best.json").read_text())
    assert best["backend"] == "process"
    assert best["objective"]["name"] == "valid_accuracy"
    assert 0.0005 <= float(best["hyperparameters"]["lr"]) <= 0.003
    assert best["hyperparameters"]["epochs"] == "2"  # the static ones travel with it
    table = (study / "jobs.txt").read_text()
    assert table.count("Completed") == 2 and "dogbreed-tune-001" in table
    assert (study / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for number in (0, 1):  # each trial is a real job with its /opt/ml tree
        job = project / "runs" / "jobs" / f"dogbreed-tune-00{number}"
        assert (job / "output" / "success").is_file()
        assert "epoch=2 " in (job / "train.log").read_text()


def test_train_uses_the_best_hyperparameters(flow, project):
    assert flow["train"].returncode == 0, flow["train"].stderr
    best = json.loads((project / "runs/tuning/dogbreed-tune/best.json").read_text())
    model = json.loads((project / "runs/jobs/final/model/model.json").read_text())
    assert model["hyperparameters"]["lr"] == pytest.approx(float(best["hyperparameters"]["lr"]))
    assert "the model is at" in flow["train"].stdout
    assert "epoch=2 train_loss=" in flow["train"].stdout  # the job's log streams through


def test_deploy_predict_and_cleanup(flow, project):
    assert flow["deploy"].returncode == 0, flow["deploy"].stderr
    record = flow["state_deployed"]["endpoints"]["dogbreed-process"]
    assert record["backend"] == "process" and record["url"].startswith("http://127.0.0.1:")
    assert flow["predict"].returncode == 0, flow["predict"].stderr
    answers = json.loads((project / "answers.json").read_text())
    assert len(answers[0]["predictions"]) == 2
    assert {p["label"] for p in answers[0]["predictions"]} <= {
        "Affenpinscher", "Afghan hound", "Airedale terrier"}
    assert "1. " in flow["predict"].stdout and "%" in flow["predict"].stdout
    # A file the endpoint refuses: its reason, exit 1.
    assert flow["refused"].returncode == 1
    assert "refused (400): the body is a damaged or truncated image" in flow["refused"].stdout
    # cleanup stopped the server: nothing answers, the state is empty.
    assert flow["cleanup"].returncode == 0, flow["cleanup"].stderr
    assert "stopped endpoint dogbreed-process" in flow["cleanup"].stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{record['url']}/ping", timeout=2)
    assert json.loads((project / "runs/state.json").read_text())["endpoints"] == {}


def test_report_is_an_html_page_with_the_plot(flow, project):
    assert flow["report"].returncode == 0, flow["report"].stderr
    page = (project / "runs" / "reports" / "final.html").read_text()
    assert "<h1>Training report: final</h1>" in page
    # The model's epochs, and the job's output data: the per-step trace, the profiler.
    for heading in ("Loss and accuracy", "Rule results", "Step time", "System utilisation"):
        assert f">{heading}</h2>" in page, heading
    assert page.count("data:image/png;base64,") >= 4
    assert "valid_accuracy" in page
    # The job wrote its own report too, with its output.
    assert (project / "runs" / "jobs" / "final" / "output" / "data" / "report.html").is_file()


def test_a_job_a_rule_stops_fails_with_the_reason_and_is_reported(flow, project):
    result = launcher("train", "--name", "exploding", "--set", "lr=10", "--set",
                      "optimizer=sgd", "--set", "epochs=3", "--rule", "ExplodingTensor:stop",
                      "--profiler-window", "2:2", cwd=project)
    assert result.returncode == 1
    assert "training job exploding failed: stopped" in result.stderr
    assert "rule ExplodingTensor found an issue" in result.stderr
    assert "python -m launcher report" in result.stderr  # where to look next
    report = launcher("report", cwd=project)  # the last job, failed or not
    assert report.returncode == 0, report.stderr
    page = (project / "runs" / "reports" / "exploding.html").read_text()
    assert "Failed" in page and "rule ExplodingTensor found an issue" in page
    assert ">Top operators</h2>" in page and "aten::" in page
    # Deploying still means the last model that trained.
    state = json.loads((project / "runs" / "state.json").read_text())
    assert state["last_training"]["job"] == "final" and state["last_job"]["job"] == "exploding"


# ---- bad input: a clear error, exit 1, nothing lost --------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["train", "--set", "learning-rate=0.1"], "bad hyperparameters: unknown hyperparameter(s) "
     "learning-rate"),
    (["train", "--set", "epochs"], "--set 'epochs': use NAME=VALUE"),
    (["train", "--hyperparameters", "missing.json"], "hyperparameters file missing.json not "
     "found"),
    (["train", "--data", "nowhere"], "no train or valid folder under nowhere"),
    (["tune", "--range", "lr=continuous:1:0"], "min (1) must be less than max (0)"),
    (["tune", "--max-jobs", "2", "--max-parallel-jobs", "5"],
     "max_parallel_jobs (5) is more than max_jobs (2)"),
    (["tune", "--objective", "accuracy"], "'accuracy' is not a metric the training job logs"),
    (["deploy", "--model", "nowhere"], "model nowhere not found"),
    (["predict", "photo.jpg", "--endpoint", "nope"], "no endpoint nope deployed"),
    (["cleanup", "--endpoint", "nope"], "no endpoint nope was deployed"),
    (["report", "--model", "nowhere"], "model nowhere not found"),
    (["report", "--output", "nowhere"], "output data nowhere not found"),
    (["data", "--synthetic", "--classes", "99"], "classes must be between 2 and 40"),
    (["data", "--zip", "missing.zip"], "zip file missing.zip not found"),
    (["train", "--config", "missing.toml"], "config file missing.toml not found"),
    (["train", "--name", "my_job"], "training job name 'my_job': use at most 63 letters"),
    (["deploy", "--name", "ep-"], "endpoint name 'ep-': use at most 63"),
])
def test_bad_input_gets_a_clear_error(tmp_path, args, expected):
    result = launcher(*args, cwd=tmp_path, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_checks_every_file_before_sending_any(flow, project, tmp_path):
    image = sorted((project / "data" / "test" / "002.Afghan_hound").glob("*.jpg"))[0]
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    result = launcher("predict", str(text), "--endpoint", "x", cwd=project, timeout=60)
    assert result.returncode == 1 and "no endpoint x deployed" in result.stderr
    state = json.loads((project / "runs" / "state.json").read_text())
    state["endpoints"]["x"] = {"backend": "process", "url": "http://127.0.0.1:9"}
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "state.json").write_text(json.dumps(state))
    result = launcher("predict", str(text), "--endpoint", "x", "--workdir", "runs",
                      cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert f"{text} is not a JPEG, PNG, WebP or HEIC image" in result.stderr
    result = launcher("predict", str(image), "--endpoint", "x", "--workdir", "runs", "--json",
                      "nowhere/answers.json", cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "folder nowhere not found" in result.stderr


def test_a_sagemaker_command_without_credentials_fails_fast(tmp_path):
    started = time.monotonic()
    result = launcher("train", "--backend", "sagemaker", cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert "the sagemaker backend needs AWS credentials" in result.stderr
    assert time.monotonic() - started < 15


def test_help_is_fast_and_imports_no_torch():
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", "import sys; from launcher.cli import main\n"
                             "try: main(['tune', '--help'])\nexcept SystemExit: pass\n"
                             "print('torch' in sys.modules, 'sagemaker' in sys.modules)"],
                            capture_output=True, text=True)
    assert time.monotonic() - started < 5  # measured: about 0.1 s
    assert "--max-parallel-jobs" in result.stdout
    assert result.stdout.strip().endswith("False False")


def test_bad_files_and_folders_get_clear_errors(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "state.json").write_text('{"endpoints": ')  # cut off mid-write
    result = launcher("cleanup", cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "state.json is damaged" in result.stderr
    (tmp_path / "null.json").write_text('{"hyperparameters": null}')
    (tmp_path / "list.json").write_text('["lr", 0.1]')
    for name in ("null.json", "list.json"):
        result = launcher("train", "--hyperparameters", name, cwd=tmp_path, timeout=60)
        assert result.returncode == 1
        assert "expected a JSON object of hyperparameters" in result.stderr
    (tmp_path / "latin1.toml").write_bytes("workdir = \"r\u00e9sum\u00e9\"\n".encode("latin-1"))
    result = launcher("train", "--config", "latin1.toml", cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "is not UTF-8 text" in result.stderr
    (tmp_path / "afile").write_text("x")
    result = launcher("data", "--synthetic", "--dest", "afile", cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "--dest afile is a file" in result.stderr
    result = launcher("cleanup", "--workdir", "afile", cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "the workdir afile is a file" in result.stderr


def test_deploy_refuses_a_port_in_use_and_report_a_folder(flow, project):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = launcher("deploy", "--port", str(port), "--name", "busy", cwd=project,
                          timeout=60)
    assert result.returncode == 1 and f"port {port} is in use" in result.stderr
    assert "busy" not in json.loads((project / "runs" / "state.json").read_text())["endpoints"]
    (project / "a_folder").mkdir(exist_ok=True)
    result = launcher("report", "--out", "a_folder", cwd=project, timeout=60)
    assert result.returncode == 1 and "--out a_folder is a folder" in result.stderr


def test_a_loss_objective_is_minimised_unless_told_otherwise(tmp_path):
    result = launcher("tune", "--objective", "valid_loss", cwd=tmp_path, timeout=60)
    assert "minimize valid_loss" in result.stdout
    result = launcher("tune", "--objective", "valid_loss", "--direction", "Maximize",
                      cwd=tmp_path, timeout=60)
    assert "maximize valid_loss" in result.stdout


def test_no_launcher_module_imports_torch_or_the_sdk():
    """The sagemaker backend must run on a laptop without torch; the SDK loads on use."""
    modules = sorted(p.stem for p in (REPO / "launcher").glob("*.py") if p.stem != "__main__")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module('launcher.' + name)\n"
            "print('torch' in sys.modules, 'sagemaker' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
