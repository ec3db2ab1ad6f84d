"""The S3 side of a SageMaker Batch Transform job over a local folder.

Every transform of the same input, model and top-k has its own S3 folder,
`S3_PREFIX/transforms/INPUT-DIGEST/` (the digest is of what `transform.json` records),
holding `input/` (the images, uploaded like `data --upload`: an object already holding a
file's bytes is not sent again), `output/` (what the jobs wrote: `<file>.out`, SageMaker's
naming) and `manifests/` (one per job). A job reads a manifest that lists only the files
without an answer, locally or in `output/`, so a second job after an interruption or a
failure scores only the rest, and answers a job left in S3 are fetched instead of paid for
twice. An answer in `output/` is taken only while `input/` still holds the very bytes of
the local file: a photo replaced under the same name is scored again, and its old answer
is deleted before the job starts.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from launcher.s3_sync import (WORKERS, delete_objects, holds, remote_objects, send_missing,
                              split_uri)
from launcher.transform import OUT_SUFFIX, RUN_FILE, Plan, read_answer_bytes

JOB_FILE = "transform-job.json"  # the job in flight for an output folder, to attach to


@dataclass
class Prepared:
    """What a job is to do, with the answers earlier jobs left."""
    base: str  # s3://bucket/prefix/transforms/NAME-DIGEST/
    to_score: list[str]
    fetched: dict[str, bytes] = field(default_factory=dict)  # file -> its `.out`
    manifest: str | None = None  # the S3 URI a job reads; None when nothing is to score

    @property
    def output(self) -> str:
        return self.base + "output/"


def base_uri(s3_prefix: str, plan: Plan) -> str:
    """The transform's own S3 folder: one per input, model and top-k (`transform.json`)."""
    recorded = (plan.output_dir / RUN_FILE).read_text()
    digest = hashlib.sha256(json.dumps(json.loads(recorded), sort_keys=True).encode())
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", plan.input_dir.resolve().name).strip("-")
    return f"{s3_prefix.rstrip('/')}/transforms/{name or 'input'}-{digest.hexdigest()[:12]}/"


def prepare(plan: Plan, base: str, s3, job: str) -> Prepared:
    """Fetch the answers `output/` already holds for pending files; upload the others'
    images (only those missing or changed) and write the manifest that lists them."""
    bucket, prefix = split_uri(base)
    inputs = remote_objects(s3, bucket, prefix, ("input",))
    found = fetch_answers(plan, base, s3, plan.pending)
    for file in list(found):  # answered for the bytes in input/: still this file's?
        key = f"{prefix}input/{file}"
        if not holds(s3, bucket, key, (plan.input_dir / file).read_bytes(), inputs.get(key)):
            del found[file]
    prepared = Prepared(base, [file for file in plan.pending if file not in found], found)
    if not prepared.to_score:
        return prepared
    # What output/ holds for a file scored again (a stale or damaged answer) goes first:
    # whatever is there when the job ends is then this job's.
    present = remote_objects(s3, bucket, prefix, ("output",))
    stale = [key for key in (f"{prefix}output/{file}{OUT_SUFFIX}" for file in prepared.to_score)
             if key in present]
    if stale:
        delete_objects(s3, bucket, stale)
    files = {f"{prefix}input/{file}": plan.input_dir / file for file in prepared.to_score}
    result = send_missing(files, inputs, bucket, s3, f"uploading to {base}input/")
    print(f"uploaded {result.sent} image(s) / {result.sent_bytes / 1e6:.1f} MB, "
          f"{result.unchanged} already there")
    manifest_key = f"{prefix}manifests/{job}.json"
    s3.put_object(Bucket=bucket, Key=manifest_key, ContentType="application/json",
                  Body=json.dumps([{"prefix": f"s3://{bucket}/{prefix}input/"},
                                   *prepared.to_score]).encode())
    prepared.manifest = f"s3://{bucket}/{manifest_key}"
    return prepared


def fetch_answers(plan: Plan, base: str, s3, files) -> dict[str, bytes]:
    """file -> the `.out` under `output/` for those of `files` that have one with
    predictions (a damaged or error answer is left out: that file is scored again).
    SageMaker names a job's output after the input object's path below the manifest's
    prefix, plus `.out`."""
    bucket, prefix = split_uri(base)
    present = remote_objects(s3, bucket, prefix, ("output",))
    keys = {file: f"{prefix}output/{file}{OUT_SUFFIX}" for file in files
            if f"{prefix}output/{file}{OUT_SUFFIX}" in present}

    def read(item: tuple[str, str]) -> tuple[str, bytes]:
        file, key = item
        return file, s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    with ThreadPoolExecutor(WORKERS) as pool:
        bodies = dict(pool.map(read, keys.items()))
    return {file: body for file, body in bodies.items() if read_answer_bytes(body) is not None}


def recorded_job(output_dir: Path) -> str | None:
    """The job an earlier run started for this output folder and did not see end."""
    try:
        return json.loads((output_dir / JOB_FILE).read_text())["job"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_job(output_dir: Path, job: str | None) -> None:
    path = output_dir / JOB_FILE
    if job is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps({"job": job}) + "\n")
