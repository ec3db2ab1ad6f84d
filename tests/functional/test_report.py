"""The job report from a real short job's model/ and output/data/, from either alone, from
SageMaker's and local mode's archives (the one finder, `dogbreed.job_outputs`), and
rendered by a real browser (headless Chromium) when one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FAST_HYPERPARAMETERS, channels_of, headings_of, images_of, rules_in, run_job
from dogbreed.job_outputs import JobOutputsError, find_job_outputs
from dogbreed.reporting.report import build_report, write_job_report
from launcher.errors import LauncherError
from launcher.job_dir import job_outputs
from launcher.report import build_report as launcher_build_report

SECTIONS = ("Rule results", "Loss and accuracy", "Gradient and weight norms", "Step time",
            "System utilisation", "Top operators", "Hyperparameters and training facts")


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def job(sample_data, tmp_path_factory) -> Path:
    """A 2-epoch job that saves weights and gradients, runs two rules and profiles 3 steps."""
    base = tmp_path_factory.mktemp("report_job")
    result = run_job(base, dict(FAST_HYPERPARAMETERS, **{
        "debugger-collections": "losses,metrics,weights,gradients",
        "debugger-save-interval": 2, "rules": "ExplodingTensor,LossNotDecreasing",
        "profiler-num-steps": 3}), channels_of(sample_data))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return base


def copy_output(job: Path, to: Path) -> Path:
    """The job's output/ folder alone (no model/), as a failed job would leave it."""
    shutil.copytree(job / "output", to / "output")
    (to / "output" / "data" / "report.html").unlink(missing_ok=True)
    return to / "output" / "data"


def test_the_job_report_shows_every_section_with_plots(job):
    out = write_job_report(job)
    assert out == job / "output" / "data" / "report.html"
    page = out.read_text()
    assert f"<h1>Training report: {job.name}</h1>" in page
    assert headings_of(page) == list(SECTIONS)
    assert '<span class="status ok">Succeeded</span>' in page
    # Per-epoch curves, per-step losses, norm lines, norm heatmaps, step time, system.
    assert len(images_of(page)) == 6
    data = job / "output" / "data"
    statuses = rules_in(data / "rules.json") | rules_in(data / "profiler" / "profiler_rules.json")
    assert {"ExplodingTensor", "LossNotDecreasing", "LowGPUUtilization",
            "StepOutlier"} <= set(statuses)
    for rule, status in statuses.items():
        assert re.search(rf"<b>{rule}</b></td><td><span class=\"status \w+\">{status}</span>",
                         page), rule
    operators = json.loads((data / "profiler" / "top_operators.json").read_text())
    assert f"<code>{operators[0]['name']}</code>" in page
    assert '<a href="profiler/torch_trace.json">' in page and "ui.perfetto.dev" in page
    best = json.loads((job / "model" / "model.json").read_text())["training"]["best_epoch"]
    assert "debugger-collections" in page and f"best epoch {best} (by valid_loss)" in page
    assert 'class="note"' not in page  # every section has its data


def test_a_failed_job_without_a_model_is_reported_from_its_output_data(job, tmp_path):
    output_data = copy_output(job, tmp_path)
    (tmp_path / "output" / "success").unlink()
    (tmp_path / "output" / "failure").write_text(
        "stopped early: LossNotDecreasing: IssuesFound at step 12")
    rules = json.loads((output_data / "rules.json").read_text())
    loss_rule = next(rule for rule in rules["rules"] if rule["rule"] == "LossNotDecreasing")
    loss_rule.update(status="IssuesFound", step=12, evidence="loss went up 12 %")
    (output_data / "rules.json").write_text(json.dumps(rules))
    result = subprocess.run([sys.executable, "-m", "dogbreed.reporting.report", str(output_data)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    page = (output_data / "report.html").read_text()
    assert headings_of(page) == list(SECTIONS)
    assert '<span class="status issue">Failed</span>' in page
    assert "stopped early: LossNotDecreasing: IssuesFound at step 12" in page
    assert "No model folder" in page and "No model.json" in page
    assert "the debugger trace&#39;s EVAL steps" in page  # per-epoch curves, from the trace
    assert '<span class="status issue">IssuesFound</span></td><td>log</td><td>12</td>' in page
    assert "loss went up 12 %" in page
    assert len(images_of(page)) == 6


def test_a_model_alone_gives_the_curves_and_says_what_is_missing(job, tmp_path):
    model = shutil.copytree(job / "model", tmp_path / "model")
    out = build_report(tmp_path / "model_only.html", "final", model_dir=model)
    page = out.read_text()
    assert "<h1>Training report: final</h1>" in page
    assert headings_of(page) == list(SECTIONS)
    assert len(images_of(page)) == 1  # the per-epoch curves
    assert "Outcome unknown" in page and "valid_accuracy" in page
    assert page.count("which was not given") == 6  # every section that reads output/data
    assert "<th>debugger-collections</th><td>losses,metrics,weights,gradients</td>" in page
    # The model/ of a job folder: the outcome is read from the job's output/.
    in_job = build_report(tmp_path / "in_job.html", "final", model_dir=job / "model")
    assert '<span class="status ok">Succeeded</span>' in in_job.read_text()


def test_a_damaged_file_is_named_and_the_rest_still_shows(job, tmp_path):
    output_data = copy_output(job, tmp_path)
    steps = output_data / "profiler" / "steps.jsonl"
    lines = steps.read_text().splitlines()
    steps.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    page = build_report(tmp_path / "r.html", "damaged", None, output_data).read_text()
    assert "could not read profiler/steps.jsonl: steps.jsonl line 2 is not JSON" in page
    assert "No step timeline" in page
    assert len(images_of(page)) == 5


def test_one_finder_locates_the_model_and_output_data_in_folders_and_archives(job, tmp_path):
    """find_job_outputs serves the job's own report, `dogbreed.reporting.report`, and the
    launcher's report and deploy on every backend."""
    data, model = job / "output" / "data", job / "model"
    for source in (job, job / "output", data, model):
        found = find_job_outputs(source, tmp_path / "scratch")
        assert (found.model_dir, found.output_data, found.title) == (model, data, job.name)
    # SageMaker: model.tar.gz with the model's files at its root, output.tar.gz with
    # output/data's files at its root.
    model_archive, sagemaker = tmp_path / "model.tar.gz", tmp_path / "sagemaker.tar.gz"
    for archive, folder in ((model_archive, model), (sagemaker, data)):
        with tarfile.open(archive, "w:gz") as tar:
            for item in folder.iterdir():
                tar.add(item, arcname=item.name)
    found = find_job_outputs(model_archive, tmp_path / "s0")
    assert found.model_dir == tmp_path / "s0" / "model" and found.output_data is None
    assert (found.model_dir / "model.safetensors").is_file()
    found = find_job_outputs(sagemaker, tmp_path / "s1")
    assert found.output_data == tmp_path / "s1" / "output" / "data" and found.model_dir is None
    assert (found.output_data / "rules.json").is_file()
    assert (found.output_data / "debug" / "index").is_dir()
    # SageMaker local mode: the whole output/ folder, the failure next to data/; the
    # launcher's local-mode job folder keeps both archives under output/.
    failed = tmp_path / "failed"
    copy_output(job, failed)
    (failed / "output" / "success").unlink()
    (failed / "output" / "failure").write_text("interrupted: SIGTERM during epoch 2")
    local_job = tmp_path / "local-job"
    (local_job / "output").mkdir(parents=True)
    shutil.copy(model_archive, local_job / "output" / "model.tar.gz")
    with tarfile.open(local_job / "output" / "output.tar.gz", "w:gz") as tar:
        for item in (failed / "output").iterdir():
            tar.add(item, arcname=item.name)
    found = find_job_outputs(local_job, tmp_path / "s2")
    assert found.model_dir == tmp_path / "s2" / "model"
    assert found.output_data == tmp_path / "s2" / "output" / "data"
    out = launcher_build_report(found.model_dir, tmp_path / "r.html", "local",
                                found.output_data)
    assert "interrupted: SIGTERM during epoch 2" in out.read_text()
    # Bad sources: each a clear error naming what was expected.
    junk = tmp_path / "junk.tar.gz"
    with tarfile.open(junk, "w:gz") as tar:
        tar.add(model / "model.json", arcname="notes/model.json")
    with pytest.raises(JobOutputsError, match="holds no job results"):
        find_job_outputs(junk, tmp_path / "s3")
    with pytest.raises(LauncherError, match="^output data .*nowhere.tar.gz not found: give"):
        job_outputs(tmp_path / "nowhere.tar.gz", tmp_path / "s4", "output data")
    (tmp_path / "notes.txt").write_text("not a job")
    with pytest.raises(JobOutputsError, match="neither a folder nor a .tar.gz"):
        find_job_outputs(tmp_path / "notes.txt", tmp_path / "s5")
    with pytest.raises(JobOutputsError, match="give its unpacked folder"):
        find_job_outputs(model_archive)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian package "
                    "chromium) to render the report in a real browser")
def test_the_report_renders_in_a_real_browser(job, tmp_path):
    out = build_report(tmp_path / "report.html", job.name, job / "model",
                       job / "output" / "data")
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,4000",
         f"--screenshot={shot}", out.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 4000)
    # A page with its plots drawn: many colours, and far from all white.
    assert image.getcolors(maxcolors=500) is None  # more than 500 distinct colours
    inked = (np.asarray(image).sum(axis=2) < 3 * 235).mean()
    assert inked > 0.1, f"only {inked:.0%} of the page is not white"
