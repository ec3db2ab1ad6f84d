"""The training job's report, on the user's machine: the page itself is built by
`dogbreed.report` (the same code writes `output/data/report.html` inside every job); here
the job's files are found and unpacked, and its errors become the CLI's.

A job's model comes as its model/ folder or model.tar.gz (`endpoints.model_dir_of`); its
output data (debugger trace, rule results, profiler records) as its output/data folder or,
from SageMaker, output.tar.gz, which holds output/data's files at its root (`debug/...`,
`rules.json`, `profiler/...`; SageMaker local mode packs the whole output/ folder, so
there they sit under `data/`, next to `success` or `failure`).
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from dogbreed.report import OUTPUT_DATA_ENTRIES, REPORT_FILE, ReportError, is_output_data
from dogbreed.report import build_report as build_page

from launcher.errors import LauncherError

__all__ = ["build_report", "output_data_of", "REPORT_FILE"]


def build_report(model_dir: Path | None, out: Path, job: str,
                 output_data: Path | None = None) -> Path:
    """The report page at `out` from a model folder, an output data folder, or both."""
    try:
        return build_page(Path(out), job, model_dir, output_data)
    except ReportError as error:
        raise LauncherError(str(error)) from None


def output_data_of(source: Path, scratch: Path) -> Path | None:
    """The job's output data folder from a job folder (laid out like /opt/ml), an
    output/data folder, a model folder inside a job folder, or an output.tar.gz (unpacked
    under `scratch`); None when a folder holds no output data (the report then shows the
    model alone). An archive is unpacked to `scratch/output/data` (and its success or
    failure file, where it has one, to `scratch/output/`, where the report looks for it)."""
    source = Path(source)
    if source.is_dir():
        for candidate in (source / "output" / "data", source / "data", source,
                          source.parent / "output" / "data"):  # .../job/model
            if is_output_data(candidate):
                return candidate
        return None
    if source.is_file() and tarfile.is_tarfile(source):
        output = Path(scratch) / "output"  # unpacked as a job's output/ folder is laid out
        shutil.rmtree(output, ignore_errors=True)  # nothing of an earlier report mixes in
        with tarfile.open(source) as archive:
            tops = {name.removeprefix("./").split("/")[0] for name in archive.getnames()}
            if tops & set(OUTPUT_DATA_ENTRIES):  # SageMaker: output/data's files at the root
                target = output / "data"
            elif "data" in tops:  # local mode: the whole output/ folder
                target = output
            else:
                raise LauncherError(f"{source} holds no job output data (debug/, rules.json "
                                    "or profiler/ at its root or under data/)")
            target.mkdir(parents=True)
            archive.extractall(target, filter="data")
        return output / "data"
    raise LauncherError(f"output data {source} not found: pass a training job's folder, its "
                        "output/data folder or its output.tar.gz")

