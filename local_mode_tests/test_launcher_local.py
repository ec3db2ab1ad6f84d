"""The launcher's `local` backend: tune (Optuna, each trial a local-mode training job in our
image), deploy a local-mode endpoint, predict over HTTP, cleanup, all with the real SDK
and Docker and no AWS call (the closed-proxy guard of conftest covers the child processes,
which inherit its environment)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import LAUNCHER_CONFIG, SERVE_IMAGE, TRAIN_IMAGE

REPO = Path(__file__).resolve().parents[1]
CONFIG = LAUNCHER_CONFIG + """[data]
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


def launcher(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=root, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1"),
                          capture_output=True, text=True)


def containers(image: str, every: bool = False) -> list[str]:
    return subprocess.run(["docker", "ps", "-q", *(["-a"] if every else []), "--filter",
                           f"ancestor={image}"], capture_output=True, text=True).stdout.split()


@pytest.fixture(scope="module")
def project(sample_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launcher_local")
    (root / "launcher.toml").write_text(CONFIG.format(data=sample_data))
    return root


def test_tune_deploy_predict_cleanup_on_local_mode(project, sample_data):
    tuned = launcher(project, "tune", "--backend", "local", "--seed", "0")
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    study = project / "runs" / "tuning" / "dogbreed-tune"
    best = json.loads((study / "best.json").read_text())
    assert best["backend"] == "local"
    assert (study / "jobs.txt").read_text().count("Completed") == 2
    for number in (0, 1):  # each trial ran in our image and left its model.tar.gz
        job = project / "runs" / "jobs" / f"dogbreed-tune-00{number}"
        assert (job / "output" / "model.tar.gz").is_file()
        assert "epoch=2 " in (job / "train.log").read_text()
    # Local mode never removes its containers; the launcher does, after each job.
    assert containers(TRAIN_IMAGE, every=True) == []

    deployed = launcher(project, "deploy", "--backend", "local", "--model",
                        best["artifact"])
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    record = json.loads((project / "runs" / "state.json").read_text())["endpoints"][
        "dogbreed-local"]
    assert len(containers(SERVE_IMAGE)) == 1
    image = sorted((sample_data / "test" / "002.Afghan_hound").glob("*.jpg"))[0]
    predicted = launcher(project, "predict", str(image), "--json", "answers.json")
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads((project / "answers.json").read_text())[0]
    assert len(answer["predictions"]) == 5
    assert {p["label"] for p in answer["predictions"]} == {
        "Affenpinscher", "Afghan hound", "Airedale terrier", "Akita", "Alaskan malamute"}

    cleaned = launcher(project, "cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "stopped endpoint dogbreed-local" in cleaned.stdout
    assert containers(SERVE_IMAGE, every=True) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{record['url']}/ping", timeout=2)


@pytest.fixture(scope="module")
def model_dir(project) -> Path:
    """A model to transform with, trained by the process backend (seconds, no Docker)."""
    trained = launcher(project, "train", "--backend", "process", "--name", "for-transform",
                       timeout=600)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    return project / "runs" / "jobs" / "for-transform" / "model"


def test_transform_and_evaluate_run_the_sdks_transformer_on_the_serving_image(
        project, sample_data, model_dir):
    """A local-mode transform job over a folder with class sub-folders (local mode itself
    reads one level): every image answered at the top-k asked, the CSV complete, no
    container left; a second run starts nothing; evaluate scores through it too."""
    test_split = sample_data / "test"
    files = sorted(path.relative_to(test_split).as_posix() for path in test_split.rglob("*")
                   if path.is_file())
    command = ["transform", str(test_split), "--backend", "local", "--model", str(model_dir),
               "--output", "scored", "--top-k", "2"]
    scored = launcher(project, *command)
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    assert f"{len(files)} file(s): {len(files)} scored now, 0 already done, 0 failed" in \
        scored.stdout
    for file in files:
        answer = json.loads((project / "scored" / (file + ".out")).read_text())
        assert len(answer["predictions"][0]) == 2, file
    with open(project / "scored" / "predictions.csv") as table:
        rows = list(csv.DictReader(table))
    assert [row["file"] for row in rows] == files
    assert {row["status"] for row in rows} == {"ok"}
    assert containers(SERVE_IMAGE, every=True) == []
    assert not list((project / "runs" / "transforms").iterdir())  # its scratch folder went

    again = launcher(project, *command)
    assert again.returncode == 0, again.stderr
    assert f"0 scored now, {len(files)} already done" in again.stdout
    assert "transform job" not in again.stdout

    evaluated = launcher(project, "evaluate", "--backend", "local", "--model", str(model_dir),
                         "--out", "evaluation")
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    metrics = json.loads((project / "evaluation" / "evaluation.json").read_text())
    job_accuracy = json.loads((model_dir / "model.json").read_text())["metrics"][
        "test_accuracy"]
    assert metrics["images"] == len(files)
    # The job's test and the serving image decode alike (reduced-scale JPEGs included):
    # before they did, these 200-420 px JPEGs flipped one answer of this 48 px model.
    assert metrics["top1_accuracy"] == pytest.approx(job_accuracy)
    assert metrics["consistency"]["consistent"] is True
    assert containers(SERVE_IMAGE, every=True) == []
