"""The training job's report, on the user's machine: the page itself is built by
`dogbreed.reporting.report` (the same code writes `output/data/report.html` inside every
job), from the model and output data `dogbreed.job_outputs.find_job_outputs` finds in
whatever the backend left (`job_dir.job_outputs`); here its errors become the CLI's.
"""

from __future__ import annotations

from pathlib import Path

from dogbreed.reporting.report import REPORT_FILE, ReportError
from dogbreed.reporting.report import build_report as build_page

from launcher.errors import LauncherError

__all__ = ["build_report", "REPORT_FILE"]


def build_report(model_dir: Path | None, out: Path, job: str,
                 output_data: Path | None = None) -> Path:
    """The report page at `out` from a model folder, an output data folder, or both."""
    try:
        return build_page(Path(out), job, model_dir, output_data)
    except ReportError as error:
        raise LauncherError(str(error)) from None

