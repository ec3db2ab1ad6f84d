"""Score a whole folder of photos, as SageMaker Batch Transform does: one JSON answer per
image, named `<file>.out` under the output folder (the input's sub-folders kept), and a
merged `predictions.csv` with a row per input file.

A finished `.out` is written whole (to a temporary name, then renamed), so an interrupted
run leaves only complete answers, and the next run over the same folders sends only the
files without one. Files that are not images, or that the endpoint refuses, get a row with
the reason in the CSV and no `.out` (a later run tries them again).
"""

from __future__ import annotations

import csv
import json
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from launcher.errors import LauncherError
from launcher.predict import content_type_of

OUT_SUFFIX = ".out"  # what SageMaker appends to each input object's name
CSV_FILE = "predictions.csv"
RUN_FILE = "transform.json"  # what the answers in the folder come from
# Requests in flight through a deployed endpoint (a transform's own server says its own).
ENDPOINT_CONCURRENCY = 4
Invoke = Callable[[bytes, str, int], tuple[int, bytes]]


@dataclass
class Plan:
    """What a run will do, known before any server starts."""
    input_dir: Path
    output_dir: Path
    files: list[str]
    pending: dict[str, str]  # file -> Content-Type, for the files without a finished answer
    failed: dict[str, str]  # file -> why it is not sent (not an image, too large)
    already_done: int


@dataclass
class TransformResult:
    plan: Plan
    scored: int = 0  # answers kept in this run (sent, or fetched from a job)
    failed: dict[str, str] = field(default_factory=dict)  # file -> reason
    csv: Path | None = None


def input_files(folder: Path) -> list[str]:
    """Every file under `folder` (hidden ones left out), as sorted relative POSIX paths."""
    if not folder.is_dir():
        raise LauncherError(f"input {folder} is not a folder of images")
    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                   if path.is_file() and not any(part.startswith(".") for part in
                                                  path.relative_to(folder).parts))
    if not files:
        raise LauncherError(f"input {folder} holds no files: nothing to score")
    return files


def check_folders(input_dir: Path, output_dir: Path) -> list[str]:
    """The input's files; refused: an input without files, an output that is a file."""
    files = input_files(input_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise LauncherError(f"output {output_dir} is a file; give a folder (it is created if "
                            "missing)")
    return files


def answer_path(output: Path, file: str) -> Path:
    return output / (file + OUT_SUFFIX)


def read_answer(path: Path) -> list[dict] | None:
    """The predictions of a finished `.out`, or None when there is none (or a damaged one)."""
    try:
        return read_answer_bytes(path.read_bytes())
    except OSError:
        return None


def plan_transform(input_dir: Path, output_dir: Path, source: dict) -> Plan:
    """The files to send: every file of `input_dir` that is an image and has no finished
    answer in `output_dir`. Refuses an output that is a file, an input without images, and
    an output holding the answers of another run (`source`: the input, the model or
    endpoint, top_k; an answer is only reused for the same). A record without answers (a
    run refused at once, say for a mistyped model) is replaced."""
    files = check_folders(input_dir, output_dir)
    source = dict(source, input=str(input_dir.resolve()))
    recorded = output_dir / RUN_FILE
    if recorded.is_file():
        try:
            earlier = json.loads(recorded.read_text())
        except ValueError:
            earlier = None
        if earlier != source and any(output_dir.rglob("*" + OUT_SUFFIX)):
            raise LauncherError(f"output {output_dir} holds the answers of another run "
                                f"({earlier}); give another --output, or remove it to score "
                                "again")
    elif output_dir.is_dir() and any(output_dir.rglob("*" + OUT_SUFFIX)):
        raise LauncherError(f"output {output_dir} holds answers that no transform recorded; "
                            "give another --output, or remove it")
    pending, failed, done = {}, {}, 0
    for file in files:
        if read_answer(answer_path(output_dir, file)) is not None:
            done += 1
            continue
        try:
            pending[file] = content_type_of(input_dir / file)
        except LauncherError as error:
            failed[file] = str(error)
    if len(failed) == len(files):
        raise LauncherError(f"input {input_dir} holds no JPEG, PNG, WebP or HEIC images "
                            f"({len(files)} other files, e.g. {files[0]})")
    output_dir.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(source, indent=2) + "\n")
    return Plan(input_dir, output_dir, files, pending, failed, done)


def run_transform(plan: Plan, invoke: Invoke, top_k: int, concurrency: int) -> TransformResult:
    """Send the plan's pending files, `concurrency` at a time; write each `.out` as its
    answer comes, then the CSV over all files. Ctrl-C stops sending, lets what is in
    flight finish, writes the CSV of what is there and raises a LauncherError saying how
    to go on."""
    result = TransformResult(plan, failed=dict(plan.failed))
    lock = threading.Lock()

    def score(file: str) -> None:
        status, body = invoke((plan.input_dir / file).read_bytes(), plan.pending[file], top_k)
        refused = keep_answer(plan, file, body, status)
        with lock:
            if refused:
                result.failed[file] = refused
            else:
                result.scored += 1

    interrupted = False
    with tqdm(total=len(plan.pending), unit="image", desc="scoring",
              disable=not plan.pending) as bar, ThreadPoolExecutor(max(1, concurrency)) as pool:
        running: set = set()
        try:
            for file in plan.pending:  # `concurrency` in flight, nothing queued behind them
                running.add(pool.submit(score, file))
                if len(running) >= concurrency:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    _finish(done, bar)
            done, running = wait(running)
            _finish(done, bar)
        except KeyboardInterrupt:
            interrupted = True
            wait(running)  # those in flight finish whole; nothing new starts
        except LauncherError:  # the endpoint went away: the table still says what is done
            wait(running)
            write_csv(plan.output_dir, plan.files, top_k, result.failed)
            raise
    result.csv = write_csv(plan.output_dir, plan.files, top_k, result.failed)
    if interrupted:
        finished = sum(read_answer(answer_path(plan.output_dir, f)) is not None
                       for f in plan.files)
        raise LauncherError(f"interrupted: {finished} of {len(plan.files)} files have their "
                            f"answer in {plan.output_dir}; run the same command again to score "
                            "the rest")
    return result


def keep_answer(plan: Plan, file: str, body: bytes, status: int | None = None) -> str | None:
    """Write an answer with predictions whole as the file's `.out`; anything else (an error,
    a damaged body) is not kept: the reason, for the CSV. `status`: the HTTP status where
    there was one (a transform job's output has none)."""
    if (status in (None, 200)) and read_answer_bytes(body) is not None:
        _write_whole(answer_path(plan.output_dir, file), body)
        return None
    return f"{status}: {_reason(body)}" if status is not None else _reason(body)


def stage_pending(plan: Plan, folder: Path) -> dict[str, str]:
    """The pending files as links in one flat folder, for a transform job over exactly
    them (local mode reads no sub-folders): staged name -> file. The names stay unique
    and show the original's."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = {}
    for index, file in enumerate(plan.pending):
        name = f"{index:06d}-{Path(file).name}"
        (folder / name).symlink_to((plan.input_dir / file).resolve())
        staged[name] = file
    return staged


def finish_job_answers(plan: Plan, answers: dict[str, bytes], missing: str | None,
                       top_k: int) -> TransformResult:
    """What a transform job left, kept like a client's answers: every pending file with
    its answer (or refusal) from `answers` (file -> `.out` bytes), the others failed with
    the reason `missing` (None: "not scored", as after Ctrl-C); then the CSV over all."""
    result = TransformResult(plan, failed=dict(plan.failed))
    for file in plan.pending:
        if file not in answers:
            if missing is not None:
                result.failed[file] = missing
            continue
        refused = keep_answer(plan, file, answers[file])
        if refused:
            result.failed[file] = refused
        else:
            result.scored += 1
    result.csv = write_csv(plan.output_dir, plan.files, top_k, result.failed)
    return result


def read_answer_bytes(body: bytes) -> list[dict] | None:
    try:
        predictions = json.loads(body)["predictions"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return predictions if isinstance(predictions, list) and predictions else None


def _finish(done, bar) -> None:
    for future in done:
        future.result()  # an unreachable endpoint ends the run with its LauncherError
        bar.update(1)


def _reason(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or body[:200])
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _write_whole(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(body)
    os.replace(partial, path)


def write_csv(output_dir: Path, files: list[str], top_k: int,
              failed: dict[str, str]) -> Path:
    """One row per input file: its top-k labels and probabilities from its `.out`, or the
    reason it has none ("not scored yet" after an interruption)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    header = ["file", "status", "error"]
    for rank in range(1, top_k + 1):
        header += [f"label_{rank}", f"probability_{rank}"]
    path = output_dir / CSV_FILE
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for file in files:
            predictions = read_answer(answer_path(output_dir, file))
            if predictions is None:
                writer.writerow([file, "failed" if file in failed else "not scored",
                                 failed.get(file, "")])
                continue
            row = [file, "ok", ""]
            for prediction in predictions[:top_k]:
                row += [prediction.get("label"), prediction.get("probability")]
            writer.writerow(row)
    os.replace(partial, path)
    return path
