"""The job report: one HTML page from a real short job's model/ and output/data/, from
either alone, with a clear error when there is nothing to show, and rendered by a real
browser (headless Chromium) when one is installed."""

from __future__ import annotations

import base64
import io
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

from conftest import FAST_HYPERPARAMETERS, channels_of, run_job
from dogbreed.report import ReportError, build_report, write_job_report
from dogbreed.smdebug_trace import TraceWriter
from launcher.errors import LauncherError
from launcher.report import build_report as launcher_build_report
from launcher.report import output_data_of

SECTIONS = ("Rule results", "Loss and accuracy", "Gradient and weight norms", "Step time",
            "System utilisation", "Top operators", "Hyperparameters and training facts")
CHROMIUM = Path("/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def images_of(page: str) -> list[Image.Image]:
    images = []
    for encoded in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        data = base64.b64decode(encoded, validate=True)
        assert data.startswith(PNG_SIGNATURE)
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.width >= 600 and image.height >= 200
        images.append(image)
    return images


def headings_of(page: str) -> list[str]:
    return re.findall(r"<h2>([^<]+)</h2>", page)


def rules_in(path: Path) -> dict[str, str]:
    return {rule["rule"]: rule["status"] for rule in json.loads(path.read_text())["rules"]}


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
    result = subprocess.run([sys.executable, "-m", "dogbreed.report", str(output_data)],
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


def diverging_gpu_job(output_data: Path, steps: int = 400) -> None:
    """What a long GPU job whose loss explodes leaves: a trace with NaN losses and infinite
    gradients, a GPU in every system sample, one very slow step, no model."""
    writer = TraceWriter(output_data / "debug")
    for step in range(0, steps, 20):
        writer.begin_step(step, "TRAIN", step)
        loss = float("nan") if step >= 300 else 2.0 * 1.01 ** step
        writer.write("loss", np.float32(loss))
        for layer in ("conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight",
                      "fc.weight"):
            writer.write(f"smdebug/reductions/l2/{layer}", np.float32(10.0))
            gradient = float("inf") if step >= 300 else 0.1 * (1 + step)
            writer.write(f"smdebug/reductions/l2/gradient/{layer}", np.float32(gradient))
    writer.close()
    profiler = output_data / "profiler"
    profiler.mkdir()
    with open(profiler / "steps.jsonl", "w") as lines:
        for step in range(1, steps + 1):
            lines.write(json.dumps({"mode": "TRAIN", "epoch": 1 + step // 200, "step": step,
                                    "global_step": step, "start": 1000.0 + 0.1 * step,
                                    "data_seconds": 0.01,
                                    "compute_seconds": 9.0 if step == 7 else 0.08}) + "\n")
    with open(profiler / "system.jsonl", "w") as lines:
        for second in range(45):
            lines.write(json.dumps({
                "time": 1000.0 + second, "cpu_percent": [20.0, 90.0, 50.0, 40.0],
                "memory_percent": 30.0, "iowait_percent": 1.0, "disk_read_bytes_per_s": 1e6,
                "disk_write_bytes_per_s": 0.0, "net_recv_bytes_per_s": 0.0,
                "net_sent_bytes_per_s": 0.0,
                "gpus": [{"index": 0, "utilization_percent": 35.0, "memory_percent": 60.0}]})
                + "\n")
    (output_data.parent / "failure").write_text("valid_loss was not finite in any epoch")


def test_a_diverging_gpu_job_shows_its_gpu_its_slow_step_and_its_non_finite_values(
        tmp_path):
    output_data = tmp_path / "output" / "data"
    output_data.mkdir(parents=True)
    diverging_gpu_job(output_data)
    page = build_report(tmp_path / "r.html", "diverged", None, output_data).read_text()
    assert "valid_loss was not finite in any epoch" in page
    assert "<th>GPU 0 utilisation mean</th><td>35 %</td>" in page
    assert "1 step(s) above" in page and "step 7: 9010 ms" in page  # cut off in the plot
    assert "No per-epoch metrics" in page  # no EVAL step in this trace
    assert "5 of 20 saved losses are not finite" in page
    assert "l2 norms of 4 parameter tensors at 20 saved training steps" in page
    # Loss per step, norm lines, norm heatmaps, step time, system (with its GPU panel).
    images = images_of(page)
    assert len(images) == 5
    assert images[-1].height > images[-2].height  # four panels, not three


def test_the_job_s_text_is_escaped_and_the_page_s_own_html_is_not(tmp_path):
    """The template autoescapes: names and messages from the job's files show as text."""
    output_data = tmp_path / "output" / "data"
    output_data.mkdir(parents=True)
    (output_data / "rules.json").write_text(json.dumps({"rules": [
        {"rule": "<i>Rule</i>", "status": "IssuesFound", "evidence": "a < b & 'c'"}]}))
    (tmp_path / "output" / "failure").write_text("<script>alert(1)</script>")
    page = build_report(tmp_path / "r.html", "<b>job</b>", None, output_data).read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<h1>Training report: &lt;b&gt;job&lt;/b&gt;</h1>" in page
    assert "<td><b>&lt;i&gt;Rule&lt;/i&gt;</b></td>" in page
    assert "<td>a &lt; b &amp; &#39;c&#39;</td>" in page
    assert "<code>profiler=on</code>" in page  # the page's own hints stay HTML


def test_nothing_to_report_on_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, message in ((empty, f"{empty} holds no training job"),
                            (tmp_path / "nowhere", f"{tmp_path / 'nowhere'} not found")):
        result = subprocess.run([sys.executable, "-m", "dogbreed.report", str(source)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: {message}"), result.stderr
        assert "Traceback" not in result.stderr
    with pytest.raises(ReportError, match="nothing to report on"):
        build_report(tmp_path / "r.html", "x")
    with pytest.raises(ReportError, match="not a model folder: no model.json"):
        build_report(tmp_path / "r.html", "x", model_dir=empty)
    with pytest.raises(LauncherError, match="not a model folder"):
        launcher_build_report(empty, tmp_path / "r.html", "x")
    assert write_job_report(empty) is None
    help_text = subprocess.run([sys.executable, "-m", "dogbreed.report", "--help"],
                               capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "OUTPUT_DATA_OR_JOB_DIR" in help_text.stdout


def test_the_launcher_finds_output_data_in_folders_and_archives(job, tmp_path):
    data = job / "output" / "data"
    for source in (job, job / "output", data, job / "model"):
        assert output_data_of(source, tmp_path / "scratch") == data
    assert output_data_of(tmp_path, tmp_path / "scratch") is None
    # SageMaker: output.tar.gz holds output/data's files at its root.
    sagemaker = tmp_path / "sagemaker.tar.gz"
    with tarfile.open(sagemaker, "w:gz") as tar:
        for item in data.iterdir():
            tar.add(item, arcname=item.name)
    unpacked = output_data_of(sagemaker, tmp_path / "s1")
    assert unpacked == tmp_path / "s1" / "output" / "data"
    assert (unpacked / "rules.json").is_file() and (unpacked / "debug" / "index").is_dir()
    # SageMaker local mode: the whole output/ folder, the failure next to data/.
    failed = tmp_path / "failed"
    copy_output(job, failed)
    (failed / "output" / "success").unlink()
    (failed / "output" / "failure").write_text("interrupted: SIGTERM during epoch 2")
    local = tmp_path / "local.tar.gz"
    with tarfile.open(local, "w:gz") as tar:
        for item in (failed / "output").iterdir():
            tar.add(item, arcname=item.name)
    unpacked = output_data_of(local, tmp_path / "s2")
    out = launcher_build_report(job / "model", tmp_path / "r.html", "local", unpacked)
    assert "interrupted: SIGTERM during epoch 2" in out.read_text()
    model_archive = tmp_path / "model.tar.gz"
    with tarfile.open(model_archive, "w:gz") as tar:
        tar.add(job / "model" / "model.json", arcname="model.json")
    with pytest.raises(LauncherError, match="holds no job output data"):
        output_data_of(model_archive, tmp_path / "s3")
    with pytest.raises(LauncherError, match="not found"):
        output_data_of(tmp_path / "nowhere.tar.gz", tmp_path / "s4")


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
