"""Make an S3 prefix hold exactly the local split folders, judged by content, not size.

Each object is written with one `put_object` carrying the file's SHA-256 twice: as the
object's metadata `sha256` (hex), the record later runs trust, and as S3's additional
checksum `ChecksumSHA256`, so that S3 itself refuses bytes damaged on the way. The
dataset's files are small (JPEGs of about 130 KB), so every file goes in a single part and
a file is read once, hashed and sent from the same bytes: a file edited during the run is
sent as one consistent version.

Is an object already the local file? The listing gives each object's size and ETag. For a
single-part upload without SSE-KMS the ETag is the MD5 of the content, so an ETag equal
to the file's MD5 settles it with no further request. A multipart ETag (`<md5 of the
parts' md5s>-<parts>`) or one under SSE-KMS is not an MD5 of the content and never equals
the file's: then the object's `sha256` metadata decides (one `head_object`), and an object
without it is sent again.

`put_object` is atomic: an object appears under its key only when all its bytes arrived
(and, with the checksum, arrived intact), so an interrupted run (Ctrl-C, lost connection)
leaves no partial object, and the next run sends what is missing or different.

A run with nothing to do lists the prefix once and hashes the local files; it sends
nothing and, in a bucket without SSE-KMS, makes no other request.
"""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from launcher.errors import LauncherError

SPLITS = ("train", "valid", "test")
WORKERS = 16
SHOWN = 10  # extra objects named in the warning; the rest are counted
DELETE_BATCH = 1000  # the most keys one DeleteObjects takes


@dataclass
class SyncResult:
    sent: int = 0
    sent_bytes: int = 0
    unchanged: int = 0
    extra: list[str] = field(default_factory=list)  # keys with no local file
    deleted: bool = False

    def summary(self, s3_uri: str) -> str:
        extra = f", extra {len(self.extra)}{' deleted' if self.deleted else ''}"
        return (f"uploaded {self.sent} file(s) / {self.sent_bytes / 1e6:.1f} MB to {s3_uri}, "
                f"unchanged {self.unchanged}{extra}")


def client(boto_session, **options):
    """One S3 client for all workers (boto3 clients are thread-safe), with a connection
    per worker: botocore's default pool of 10 would make the other 6 reconnect each time."""
    from botocore.config import Config
    return boto_session.client("s3", config=Config(max_pool_connections=WORKERS), **options)


def split_uri(s3_uri: str) -> tuple[str, str]:
    """Bucket and key prefix ('' or ending in '/'): `s3://b/data` must not match `data2/`."""
    bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, prefix + "/" if prefix else ""


def local_files(root: Path, prefix: str) -> dict[str, Path]:
    """Key -> file for every file under the split folders (only those become channels)."""
    return {prefix + path.relative_to(root).as_posix(): path
            for split in SPLITS if (root / split).is_dir()
            for path in sorted((root / split).rglob("*")) if path.is_file()}


def remote_objects(s3, bucket: str, prefix: str,
                   folders: tuple[str, ...] = SPLITS) -> dict[str, tuple[int, str]]:
    """Key -> (size, ETag without quotes) of the objects under the prefix's `folders` (by
    default the splits: what the channels would read; ("",): all of the prefix)."""
    found = {}
    for folder in folders:
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}{folder}/" if folder else prefix)
        for page in pages:
            found.update({item["Key"]: (item["Size"], item["ETag"].strip('"'))
                          for item in page.get("Contents", [])})
    return found


def sync(root: Path, s3_uri: str, s3, delete: bool = False, workers: int = WORKERS,
         on_file: Callable[[str, int], None] | None = None) -> SyncResult:
    """Send the files whose object is missing or differs; list (or, with delete, remove)
    the objects that have no local file. `s3` is one boto3 client (they are thread-safe).

    on_file(key, nbytes) runs in the calling thread after each file is settled (sent or
    found unchanged): it drives the progress bar, and an exception from it stops the run
    the way Ctrl-C does.
    """
    bucket, prefix = split_uri(s3_uri)
    files = local_files(root, prefix)
    present = remote_objects(s3, bucket, prefix)
    result = send_missing(files, present, bucket, s3, f"syncing to {s3_uri}", workers, on_file)
    result.extra = sorted(set(present) - set(files))
    if result.extra and delete:
        delete_objects(s3, bucket, result.extra)
        result.deleted = True
    elif result.extra:
        shown = "\n".join(f"  s3://{bucket}/{key}" for key in result.extra[:SHOWN])
        more = len(result.extra) - SHOWN
        print(f"WARNING: {len(result.extra)} object(s) under {s3_uri} have no local file, and "
              f"the training channels will still read them:\n{shown}" +
              (f"\n  ... and {more} more" if more > 0 else "") +
              "\npass --delete to remove them")
    return result


def send_missing(files: dict[str, Path], present: dict[str, tuple[int, str]], bucket: str,
                 s3, description: str, workers: int = WORKERS,
                 on_file: Callable[[str, int], None] | None = None) -> SyncResult:
    """Send each file (key -> path) whose object in `present` (from `remote_objects`) is
    missing or holds other bytes; see `sync` for on_file."""
    result = SyncResult()

    def settle(key: str) -> tuple[str, bool, int]:
        """Send one file unless its object already holds the same bytes."""
        body = files[key].read_bytes()
        if holds(s3, bucket, key, body, present.get(key)):
            return key, False, len(body)
        digest = hashlib.sha256(body)
        s3.put_object(Bucket=bucket, Key=key, Body=body,
                      ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
                      Metadata={"sha256": digest.hexdigest()})
        return key, True, len(body)

    total = sum(path.stat().st_size for path in files.values())
    with tqdm(total=total, unit="B", unit_scale=True, desc=description) as bar:
        pool = ThreadPoolExecutor(max_workers=workers)
        pending = {pool.submit(settle, key) for key in files}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                # Count what did arrive before raising what did not.
                for future in sorted(done, key=lambda future: future.exception() is not None):
                    key, sent, size = future.result()
                    if sent:
                        result.sent += 1
                        result.sent_bytes += size
                    else:
                        result.unchanged += 1
                    bar.update(size)
                    bar.set_postfix(files=f"{result.sent + result.unchanged}/{len(files)}",
                                    sent=result.sent, refresh=False)
                    if on_file:
                        on_file(key, size)
        except BaseException as error:
            # Ctrl-C, a lost connection, an unreadable file: drop what has not started,
            # let the uploads in flight finish (each is atomic), and say how to go on.
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(error, KeyboardInterrupt):
                print(f"\ninterrupted after sending {result.sent} file(s): run the same "
                      "command again to send the rest")
                raise
            raise LauncherError(f"the upload stopped after sending {result.sent} file(s) "
                                f"({error}); run the same command again to send the rest; "
                                "objects already there are complete") from error
        pool.shutdown()
    return result


def holds(s3, bucket: str, key: str, body: bytes, listed: tuple[int, str] | None) -> bool:
    """Does the object hold exactly `body`? `listed`: its (size, ETag) from
    `remote_objects`, None when it is not there. An ETag equal to the MD5 settles the
    common case; otherwise the object's `sha256` metadata does (one head_object)."""
    size, etag = listed or (None, "")
    if size != len(body):
        return False
    if etag == hashlib.md5(body, usedforsecurity=False).hexdigest():
        return True
    head = s3.head_object(Bucket=bucket, Key=key)
    return head.get("Metadata", {}).get("sha256") == hashlib.sha256(body).hexdigest()


def delete_objects(s3, bucket: str, keys: list[str]) -> None:
    """Remove keys in batches of 1,000; any key S3 could not remove is an error."""
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start:start + DELETE_BATCH]
        answer = s3.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": key} for key in batch], "Quiet": True})
        if answer.get("Errors"):
            failed = answer["Errors"]
            raise LauncherError(f"could not delete {len(failed)} object(s), e.g. "
                                f"{failed[0]['Key']}: {failed[0].get('Message', '')}")
