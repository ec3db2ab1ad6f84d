"""`python -m launcher transform` on the process backend, as a user runs it: the serving
program in batch-transform mode over a folder of the sample data's photos."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import model_server_processes
from test_launcher_process import launcher, offline_env

CONFIG = """
workdir = "{workdir}"
[serving]
workers = 1
"""


@pytest.fixture()
def project(tmp_path, sample_data) -> Path:
    """A working folder with a config, and INPUT: the test split's 15 photos in their breed
    folders, plus a text file that is not an image."""
    (tmp_path / "launcher.toml").write_text(CONFIG.format(workdir=tmp_path / "runs"))
    shutil.copytree(sample_data / "test", tmp_path / "input")
    (tmp_path / "input" / "notes.txt").write_text("not a photo")
    return tmp_path


def _images(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))


def _rows(output: Path) -> dict[str, dict]:
    with open(output / "predictions.csv", newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def test_every_image_gets_its_answer_and_a_row(project, trained_model):
    result = launcher("transform", "input", "--output", "out", "--model", str(trained_model),
                      "--top-k", "3", cwd=project)
    assert result.returncode == 1, result.stderr  # the text file failed
    images = _images(project / "input")
    assert len(images) == 15
    for image in images:
        answer = json.loads((project / "out" / f"{image}.out").read_text())
        assert len(answer["predictions"][0]) == 3  # SageMaker's file: the server's body
    rows = _rows(project / "out")
    assert sorted(rows) == sorted(images + ["notes.txt"])
    assert rows["notes.txt"]["status"] == "failed"
    assert "not a JPEG, PNG, WebP or HEIC image" in rows["notes.txt"]["error"]
    for image in images:
        expected = json.loads((project / "out" / f"{image}.out").read_text())["predictions"][0]
        assert rows[image]["status"] == "ok"
        assert [rows[image][f"label_{rank}"] for rank in (1, 2, 3)] == \
            [p["label"] for p in expected]
        assert float(rows[image]["probability_1"]) == pytest.approx(expected[0]["probability"])
    assert "16 file(s): 15 scored now, 0 already done, 1 failed" in result.stdout
    assert list((project / "out").rglob("*.partial")) == []
    assert model_server_processes(project / "runs" / "transforms") == []  # server gone


def test_an_interrupted_run_is_completed_by_the_next_without_redoing_anything(
        project, trained_model):
    """Ctrl-C once some answers are written: each answer is whole, the CSV lists what is
    missing, and a second run sends exactly the files without an answer."""
    command = [sys.executable, "-m", "launcher", "transform", "input", "--output", "out",
               "--model", str(trained_model), "--concurrency", "1"]
    first = subprocess.Popen(command, cwd=project, env=offline_env(project),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list((project / "out").rglob("*.out"))) < 3 and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 1, stderr
    assert "interrupted:" in stderr and "run the same command again" in stderr
    written = {path: path.stat().st_mtime_ns for path in (project / "out").rglob("*.out")}
    assert 3 <= len(written) < 15
    for path in written:
        assert json.loads(path.read_text())["predictions"]  # whole, never half written
    rows = _rows(project / "out")
    assert sum(row["status"] == "not scored" for row in rows.values()) == 15 - len(written)

    second = launcher("transform", "input", "--output", "out", "--model", str(trained_model),
                      cwd=project)
    assert f"16 file(s): {15 - len(written)} scored now, {len(written)} already done, " \
           "1 failed" in second.stdout, second.stdout + second.stderr
    assert {path: path.stat().st_mtime_ns for path in written} == written  # not redone
    assert len(list((project / "out").rglob("*.out"))) == 15
    assert sum(row["status"] == "ok" for row in _rows(project / "out").values()) == 15


@pytest.mark.parametrize("prepare, args, message", [
    (lambda root: (root / "empty").mkdir(), ("empty",), "holds no files: nothing to score"),
    (lambda root: ((root / "texts").mkdir(), (root / "texts" / "a.txt").write_text("a")),
     ("texts", "--model", "m"),
     "holds no JPEG, PNG, WebP or HEIC images (1 other files, e.g. a.txt)"),
    (lambda root: (root / "taken").write_text("a file"), ("input", "--output", "taken"),
     "output taken is a file"),
    (lambda root: None, ("missing",), "input missing is not a folder of images"),
    (lambda root: None, ("input", "--endpoint", "nowhere"), "no endpoint nowhere deployed"),
    (lambda root: None, ("input", "--backend", "sagemaker", "--model", "m", "--output",
                         "sagemaker-out"),
     "a transform job on the sagemaker backend reads a model.tar.gz in S3, not m"),
])
def test_bad_input_is_refused_before_anything_starts(project, prepare, args, message):
    prepare(project)
    result = launcher("transform", *args, cwd=project, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (project / "runs" / "transforms").exists()  # no model server was started


def test_evaluate_scores_the_test_split_and_agrees_with_the_job(project, sample_data,
                                                                trained_model):
    """The page's numbers equal a computation here from the answers it was built on, and
    the endpoint's top-1 over the test split equals the training job's own test_accuracy
    (the same photos, the same preprocessing)."""
    result = launcher("evaluate", "--model", str(trained_model), "--data", str(sample_data),
                      "--out", "evaluation", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    evaluation = json.loads((project / "evaluation" / "evaluation.json").read_text())
    description = json.loads((trained_model / "model.json").read_text())
    folders = description["class_folders"]
    answers = {path: json.loads(path.read_text())["predictions"][0]
               for path in (project / "evaluation" / "transform").rglob("*.out")}
    assert len(answers) == evaluation["images"] == 15
    truth = {path: folders.index(path.parent.name) for path in answers}
    top1 = sum(answers[p][0]["class_id"] == truth[p] for p in answers) / len(answers)
    top5 = sum(truth[p] in [a["class_id"] for a in answers[p][:5]] for p in answers) / 15
    assert evaluation["top1_accuracy"] == pytest.approx(top1)
    assert evaluation["top5_accuracy"] == pytest.approx(top5)
    job_accuracy = description["metrics"]["test_accuracy"]
    assert evaluation["consistency"]["job_test_accuracy"] == pytest.approx(job_accuracy)
    assert evaluation["top1_accuracy"] == pytest.approx(job_accuracy)
    assert evaluation["consistency"]["consistent"] is True
    assert f"endpoint top-1 {job_accuracy:.4f} = job test_accuracy" in result.stdout
    page = (project / "evaluation" / "evaluation.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # confusion heatmap, reliability


def test_another_runs_answers_are_never_taken_for_this_ones(project, trained_model):
    """The same output with another top_k (or model, or input) is refused, not reused."""
    first = launcher("transform", "input", "--output", "out", "--model", str(trained_model),
                     "--top-k", "3", cwd=project)
    assert first.returncode == 1 and "15 scored now" in first.stdout  # notes.txt failed
    second = launcher("transform", "input", "--output", "out", "--model", str(trained_model),
                      "--top-k", "5", cwd=project, timeout=60)
    assert second.returncode == 1
    assert "output out holds the answers of another run" in second.stderr
    assert len(json.loads(next((project / "out").rglob("*.out")).read_text())
               ["predictions"][0]) == 3  # left as they were


def test_a_run_refused_at_once_does_not_hold_its_output_for_ever(project, trained_model):
    """A mistyped --model records its source but writes no answer: the corrected command
    then scores into the same output instead of being refused as another run's."""
    typo = launcher("transform", "input", "--output", "typo", "--model", "no-such-model",
                    cwd=project, timeout=60)
    assert typo.returncode == 1 and "no-such-model" in typo.stderr
    fixed = launcher("transform", "input", "--output", "typo", "--model", str(trained_model),
                     cwd=project)
    assert "16 file(s): 15 scored now, 0 already done, 1 failed" in fixed.stdout, \
        fixed.stdout + fixed.stderr


def test_evaluate_compares_with_the_job_only_on_the_test_split(project, sample_data,
                                                               trained_model):
    result = launcher("evaluate", "--model", str(trained_model), "--data", str(sample_data),
                      "--split", "valid", "--out", "valid", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "(no job test_accuracy to compare with)" in result.stdout
    assert json.loads((project / "valid" / "evaluation.json").read_text())[
        "consistency"]["consistent"] is None


@pytest.mark.parametrize("args, message", [
    (("--split", "holdout"), "split folder"),
    (("--split", "train", "--model", "nowhere"), "model nowhere not found"),
])
def test_evaluate_refuses_bad_input(project, sample_data, trained_model, args, message):
    arguments = ["--data", str(sample_data), "--model", str(trained_model), *args]
    result = launcher("evaluate", *arguments, cwd=project, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr


def test_evaluate_refuses_a_split_with_breeds_the_model_does_not_know(project, sample_data,
                                                                      trained_model):
    data = project / "data"
    shutil.copytree(sample_data / "test", data / "test")
    shutil.copytree(data / "test" / sorted(p.name for p in (data / "test").iterdir())[0],
                    data / "test" / "999.Unicorn")
    result = launcher("evaluate", "--data", str(data), "--model", str(trained_model),
                      cwd=project, timeout=120)
    assert result.returncode == 1
    assert "has folders the model does not know: 999.Unicorn" in result.stderr
