"""`launcher data --upload` against moto in server mode: the old size-only, one-file-at-a-
time `upload` (before, copied below from the commit before issue 11) against
`launcher.s3_sync.sync` (after: content by SHA-256, 16 threads), side by side in one run.

FILES files of random bytes (incompressible, like JPEGs) with log-normal sizes around
130 KB (the dog-breed JPEGs' mean; about 1.1 GB for 8,351 files; --scale shrinks every file
for a machine short of memory: moto keeps objects in memory). Each tool uploads to its own
fresh prefix (first upload), then runs again with nothing changed, ROUNDS times (median);
then one file is changed in place, same size, and each runs once more: does it notice?

    .venv/bin/python benchmarks/s3_sync.py [--files 8351] [--scale 1.0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import requests
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from launcher.s3_sync import client, sync  # noqa: E402

SPLITS = ("train", "valid", "test")
MEAN_BYTES = 130_000
SIGMA = 0.5  # log-normal spread: most files 50-300 KB, as in dogImages


def upload_before(root: Path, s3_uri: str, boto_session) -> int:
    """launcher.data.upload before issue 11, verbatim."""
    bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    s3 = boto_session.client("s3")
    present = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        present.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    files = [path for split in SPLITS if (root / split).is_dir()
             for path in sorted((root / split).rglob("*")) if path.is_file()]
    keys = {path: "/".join(filter(None, [prefix, str(path.relative_to(root))])) for path in files}
    todo = [path for path in files if present.get(keys[path]) != path.stat().st_size]
    with tqdm(total=sum(path.stat().st_size for path in todo), unit="B", unit_scale=True,
              desc=f"uploading to {s3_uri}") as bar:
        for path in todo:
            s3.upload_file(str(path), bucket, keys[path], Callback=bar.update)
    return len(todo)


def write_files(root: Path, count: int, scale: float) -> int:
    """count files over 133 classes in the dataset's split proportions; total bytes."""
    rng = random.Random(0)
    mu = math.log(MEAN_BYTES * scale) - SIGMA ** 2 / 2  # so the mean is MEAN_BYTES * scale
    total = 0
    for index in range(count):
        split = "train" if index % 10 < 8 else SPLITS[1 + index % 2]
        folder = root / split / f"{index % 133 + 1:03d}.Breed_{index % 133 + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        size = max(1, int(rng.lognormvariate(mu, SIGMA)))
        (folder / f"image_{index:05d}.jpg").write_bytes(rng.randbytes(size))
        total += size
    return total


def start_moto(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return process
        except requests.ConnectionError:
            time.sleep(0.2)
    raise SystemExit("moto did not start")


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    answer = function(*args, **kwargs)
    return answer, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=8351)
    parser.add_argument("--scale", type=float, default=1.0, help="file sizes x this")
    parser.add_argument("--rounds", type=int, default=3, help="runs with nothing to send")
    parser.add_argument("--port", type=int, default=5791)
    args = parser.parse_args()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{args.port}",
                      AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    tqdm.__init__ = functools.partialmethod(tqdm.__init__, disable=True)  # bars off: timing
    for name in ("AWS_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    workdir = Path(tempfile.mkdtemp(prefix="s3sync-bench-"))
    moto = start_moto(args.port)
    try:
        root = workdir / "data"
        total = write_files(root, args.files, args.scale)
        print(f"{args.files:,} files, {total / 1e6:,.1f} MB (mean {total / args.files / 1e3:.0f}"
              f" KB), moto server on 127.0.0.1:{args.port}, {os.cpu_count()} CPU(s)")
        session = boto3.session.Session()
        s3 = client(session)
        s3.create_bucket(Bucket="bench")
        before_uri, after_uri = "s3://bench/before", "s3://bench/after"
        rows = {}
        sent, seconds = timed(upload_before, root, before_uri, session)
        rows["before"] = [(sent, seconds)]
        result, seconds = timed(sync, root, after_uri, s3)
        rows["after"] = [(result.sent, seconds)]
        again = {"before": [], "after": []}
        for _ in range(args.rounds):
            sent, seconds = timed(upload_before, root, before_uri, session)
            again["before"].append((sent, seconds))
            result, seconds = timed(sync, root, after_uri, s3)
            again["after"].append((result.sent, seconds))
        victim = next((root / "train").rglob("*.jpg"))
        changed = bytearray(victim.read_bytes())
        changed[0] ^= 0xFF
        victim.write_bytes(bytes(changed))
        noticed = {"before": upload_before(root, before_uri, session),
                   "after": sync(root, after_uri, s3).sent}
        print(f"\n| tool | first upload: files sent | s | files/s | nothing to send "
              f"(median of {args.rounds}): files sent | s | files/s | one file changed, "
              "same size: files sent |")
        print("|---|---|---|---|---|---|---|---|")
        for tool in ("before", "after"):
            first_sent, first_s = rows[tool][0]
            idle_s = statistics.median(seconds for _, seconds in again[tool])
            idle_sent = max(sent for sent, _ in again[tool])
            print(f"| {tool} | {first_sent:,} | {first_s:.1f} | {args.files / first_s:,.0f} | "
                  f"{idle_sent} | {idle_s:.2f} | {args.files / idle_s:,.0f} | "
                  f"{noticed[tool]} |")
        print("\nfiles/s counts every local file (sent or checked), so the rows compare.")
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
