"""Where a training job's model and output data are, from whatever the user points at.

One function for every reader (the job's own report, `python -m dogbreed.reporting.report`,
the launcher's `report` and `deploy` on every backend), because a job's results come in
several shapes:

- a job folder laid out like /opt/ml: `model/` (with `model.json`) and `output/data/`; a
  job the launcher ran in SageMaker local mode has `output/model.tar.gz` and
  `output/output.tar.gz` there instead;
- its `output/data/` folder (the debugger trace `debug/`, `rules.json`, `profiler/`), or
  its `output/` folder, or its `model/` folder;
- SageMaker's `model.tar.gz` (the model's files at its root) and `output.tar.gz` (output
  data's files at its root; local mode packs the whole output/ folder, so there they sit
  under `data/`, next to `success` or `failure`). Archives are unpacked under `unpack_to`.

Torch-free: the launcher imports it.
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

MODEL_JSON = "model.json"
OUTPUT_DATA_ENTRIES = ("debug", "rules.json", "profiler")


class JobOutputsError(ValueError):
    """The source holds no job results; the message says what was expected."""


@dataclass(frozen=True)
class JobOutputs:
    model_dir: Path | None  # a folder with model.json
    output_data: Path | None  # a job's output/data folder (its outcome file one level up)
    title: str  # the job's name as the folders tell it


def is_model_dir(folder: Path) -> bool:
    return (folder / MODEL_JSON).is_file()


def is_output_data(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in OUTPUT_DATA_ENTRIES)


def find_job_outputs(source: Path, unpack_to: Path | None = None) -> JobOutputs:
    """The model and output data `source` holds or sits next to (either may be None, not
    both); JobOutputsError when it holds neither. Archives need `unpack_to`."""
    source = Path(source)
    if not source.exists():
        raise JobOutputsError(f"{source} not found: give a training job's folder, its "
                              "model/ or output/data/ folder, or its model.tar.gz or "
                              "output.tar.gz")
    if source.is_dir():
        found = _in_folder(source, unpack_to)
    elif tarfile.is_tarfile(source):
        found = _in_archive(source, unpack_to)
    else:
        raise JobOutputsError(f"{source} is neither a folder nor a .tar.gz archive: give a "
                              "training job's folder, or its model.tar.gz or output.tar.gz")
    if found.model_dir is None and found.output_data is None:
        raise JobOutputsError(
            f"{source} holds no training job: no model/ or output/data/ (a job folder), no "
            "debug/, rules.json or profiler/ (its output data), no model.json (a model "
            "folder)")
    return found


def _in_folder(source: Path, unpack_to: Path | None) -> JobOutputs:
    source = source.resolve()
    if (source / "model").is_dir() or (source / "output").is_dir():  # a job folder
        model = source / "model"
        output = source / "output"
        model_dir = model if is_model_dir(model) else None
        output_data = output / "data" if (output / "data").is_dir() else None
        if model_dir is None and (output / "model.tar.gz").is_file() and unpack_to:
            model_dir = _in_archive(output / "model.tar.gz", unpack_to).model_dir
        if output_data is None and (output / "output.tar.gz").is_file() and unpack_to:
            output_data = _in_archive(output / "output.tar.gz", unpack_to).output_data
        return JobOutputs(model_dir, output_data, source.name)
    if is_model_dir(source):  # model/ of a job folder, or a model on its own
        beside = source.parent / "output" / "data"
        title = source.parent.name if source.name == "model" else source.name
        return JobOutputs(source, beside if is_output_data(beside) else None, title)
    for data, base in ((source, source.parent.parent), (source / "data", source.parent)):
        if is_output_data(data):  # output/data/, or output/
            model = base / "model"
            in_job = data.name == "data" and data.parent.name == "output"
            return JobOutputs(model if in_job and is_model_dir(model) else None, data,
                              base.name if in_job else source.name)
    return JobOutputs(None, None, source.name)


def _in_archive(archive_path: Path, unpack_to: Path | None) -> JobOutputs:
    if unpack_to is None:
        raise JobOutputsError(f"{archive_path} is an archive: give its unpacked folder")
    with tarfile.open(archive_path) as archive:
        tops = {name.removeprefix("./").split("/")[0] for name in archive.getnames()}
        if MODEL_JSON in tops:  # model.tar.gz
            model_dir, output_data = Path(unpack_to) / "model", None
            target = model_dir
        elif tops & set(OUTPUT_DATA_ENTRIES):  # SageMaker's output.tar.gz: output/data's files
            model_dir, output_data = None, Path(unpack_to) / "output" / "data"
            target = output_data
        elif "data" in tops:  # local mode's output.tar.gz: the whole output/ folder
            model_dir, output_data = None, Path(unpack_to) / "output" / "data"
            target = output_data.parent
        else:
            raise JobOutputsError(
                f"{archive_path} holds no job results: no model.json (a model.tar.gz), no "
                "debug/, rules.json or profiler/ at its root or under data/ (an "
                "output.tar.gz)")
        shutil.rmtree(target, ignore_errors=True)  # nothing of an earlier unpacking mixes in
        target.mkdir(parents=True)
        archive.extractall(target, filter="data")
    title = archive_path.name.removesuffix(".tar.gz")
    return JobOutputs(model_dir, output_data, title)
