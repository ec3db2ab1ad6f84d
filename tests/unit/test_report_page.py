"""The report page from synthetic output data (in process): a diverging GPU job, escaping,
and a clear error when there is nothing to show. Real jobs' reports are in
functional/test_report.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import images_of
from dogbreed.debugging.trace import TraceWriter
from dogbreed.reporting.report import ReportError, build_report
from dogbreed.reporting.report import main as report_main
from dogbreed.reporting.report import write_job_report
from launcher.errors import LauncherError
from launcher.report import build_report as launcher_build_report


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


def test_nothing_to_report_on_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, message in ((empty, f"{empty} holds no training job"),
                            (tmp_path / "nowhere", f"{tmp_path / 'nowhere'} not found")):
        assert report_main([str(source)]) == 2  # `python -m dogbreed.reporting.report`
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}"), err
    with pytest.raises(ReportError, match="nothing to report on"):
        build_report(tmp_path / "r.html", "x")
    with pytest.raises(ReportError, match="not a model folder: no model.json"):
        build_report(tmp_path / "r.html", "x", model_dir=empty)
    with pytest.raises(LauncherError, match="not a model folder"):
        launcher_build_report(empty, tmp_path / "r.html", "x")
    assert write_job_report(empty) is None
    with pytest.raises(SystemExit) as exit_:
        report_main(["--help"])
    assert exit_.value.code == 0 and "OUTPUT_DATA_OR_JOB_DIR" in capsys.readouterr().out
