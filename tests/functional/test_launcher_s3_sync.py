"""`launcher data --upload` against moto in server mode: what is sent is judged by content
(the sha256 kept with each object), objects with no local file are listed or deleted, and
an interrupted upload continues without sending anything twice."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from launcher.s3_sync import client, sync
from moto_server import Moto

REPO = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"
buckets = itertools.count()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = Moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def s3(moto):
    import boto3
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing",
                                    aws_secret_access_key="testing")
    return client(session, endpoint_url=moto.url)


@pytest.fixture
def bucket(s3) -> str:
    """A fresh bucket that keeps every version: each write the sync made can be counted."""
    name = f"sync-tests-{next(buckets)}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def data(sample_data, tmp_path) -> Path:
    root = tmp_path / "data"
    for split in ("train", "valid", "test"):
        shutil.copytree(sample_data / split, root / split)
    (root / "validation.json").write_text("{}")  # not a channel: never uploaded
    return root


def local(root: Path) -> dict[str, Path]:
    return {path.relative_to(root).as_posix(): path for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != "validation.json"}


def objects(s3, bucket: str, prefix: str = "data/") -> dict[str, dict]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({item["Key"].removeprefix(prefix): item for item in page.get("Contents", [])})
    return found


def writes(s3, bucket: str) -> Counter:
    """Key -> how many times it was written (moto's request recorder garbles lines under
    parallel requests, so the bucket's versions are the record)."""
    written = Counter()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        written.update(item["Key"] for item in page.get("Versions", []))
    return written


def test_a_second_run_sends_nothing_and_a_same_size_change_is_sent(moto, s3, bucket, data):
    files = local(data)
    first = sync(data, f"s3://{bucket}/data", s3)
    assert (first.sent, first.unchanged, first.extra) == (len(files), 0, [])
    assert first.sent_bytes == sum(path.stat().st_size for path in files.values())
    stored = objects(s3, bucket)
    assert sorted(stored) == sorted(files)
    key = "train/001.Affenpinscher/Affenpinscher_00001.jpg"
    head = s3.head_object(Bucket=bucket, Key=f"data/{key}")
    assert head["Metadata"]["sha256"] == hashlib.sha256(files[key].read_bytes()).hexdigest()

    once = Counter(f"data/{name}" for name in files)
    assert writes(s3, bucket) == once
    again = sync(data, f"s3://{bucket}/data", s3)
    assert (again.sent, again.sent_bytes, again.unchanged, again.extra) == (0, 0, len(files), [])
    assert writes(s3, bucket) == once
    assert {k: v["LastModified"] for k, v in objects(s3, bucket).items()} == \
        {k: v["LastModified"] for k, v in stored.items()}

    # Same size, other bytes: a size-only check would miss it.
    changed = bytearray(files[key].read_bytes())
    changed[-3] ^= 0xFF
    files[key].write_bytes(bytes(changed))
    third = sync(data, f"s3://{bucket}/data", s3)
    assert (third.sent, third.sent_bytes, third.unchanged) == (1, len(changed), len(files) - 1)
    assert writes(s3, bucket) == once + Counter([f"data/{key}"])
    body = s3.get_object(Bucket=bucket, Key=f"data/{key}")["Body"].read()
    assert body == bytes(changed)


def test_objects_without_a_local_file_are_listed_then_deleted(s3, bucket, data, capsys):
    sync(data, f"s3://{bucket}/data", s3)
    gone = sorted(local(data))[:12]
    for name in gone:
        (data / name).unlink()
    # A neighbouring prefix is no business of this sync.
    s3.put_object(Bucket=bucket, Key="data2/train/x.jpg", Body=b"x")
    capsys.readouterr()

    listed = sync(data, f"s3://{bucket}/data", s3)
    assert (listed.sent, listed.extra, listed.deleted) == (0, [f"data/{n}" for n in gone], False)
    out = capsys.readouterr().out
    assert f"WARNING: 12 object(s) under s3://{bucket}/data have no local file" in out
    assert "the training channels will still read them" in out
    assert all(f"s3://{bucket}/data/{name}" in out for name in gone[:10])
    assert f"data/{gone[10]}" not in out and "... and 2 more" in out
    assert "pass --delete" in out
    assert set(gone) <= set(objects(s3, bucket))

    deleted = sync(data, f"s3://{bucket}/data", s3, delete=True)
    assert (deleted.sent, len(deleted.extra), deleted.deleted) == (0, 12, True)
    assert sorted(objects(s3, bucket)) == sorted(local(data))
    assert "data2/train/x.jpg" in objects(s3, bucket, prefix="")
    assert "WARNING" not in capsys.readouterr().out
    assert deleted.summary("s3://b/data").endswith("unchanged "
                                                   f"{len(local(data))}, extra 12 deleted")


def test_an_interrupted_upload_continues_without_sending_anything_twice(moto, s3, bucket,
                                                                        data, capsys):
    files = local(data)
    settled = []

    def ctrl_c_after_five(key, size):
        settled.append(key)
        if len(settled) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(data, f"s3://{bucket}/data", s3, workers=4, on_file=ctrl_c_after_five)
    assert "run the same command again to send the rest" in capsys.readouterr().out
    first = writes(s3, bucket)
    # The uploads in flight finished (each put is all or nothing); the rest never started.
    assert 5 <= len(first) < len(files)
    assert len(objects(s3, bucket)) == len(first)

    rest = sync(data, f"s3://{bucket}/data", s3)
    assert (rest.sent, rest.unchanged) == (len(files) - len(first), len(first))
    assert writes(s3, bucket) == Counter(f"data/{name}" for name in files)  # each once
    for name, path in files.items():
        head = s3.head_object(Bucket=bucket, Key=f"data/{name}")
        assert head["Metadata"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert head["ContentLength"] == path.stat().st_size


def test_a_file_that_vanishes_mid_run_stops_it_with_a_way_on(s3, bucket, data):
    from launcher.errors import LauncherError
    last = data / sorted(local(data))[-1]
    kept = last.read_bytes()

    def remove_the_last_file(key, size):
        if last.exists():
            last.unlink()

    with pytest.raises(LauncherError, match="run the same command again to send the rest") \
            as stopped:
        sync(data, f"s3://{bucket}/data", s3, workers=1, on_file=remove_the_last_file)
    assert "No such file" in str(stopped.value)
    first = len(writes(s3, bucket))
    assert 0 < first < len(local(data))  # what was queued behind the failure waits
    last.write_bytes(kept)
    rest = sync(data, f"s3://{bucket}/data", s3)
    assert (rest.sent, rest.unchanged) == (len(local(data)) - first, first)
    assert writes(s3, bucket) == Counter(f"data/{name}" for name in local(data))


def test_the_cli_uploads_and_deletes(moto, s3, bucket, data, tmp_path):
    (tmp_path / "launcher.toml").write_text(
        f'[aws]\nregion = "us-east-1"\nbucket = "{bucket}"\nprefix = "proj"\n')
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1", PYTHONPATH=str(REPO),
               HTTP_PROXY=NOWHERE, HTTPS_PROXY=NOWHERE, http_proxy=NOWHERE,
               https_proxy=NOWHERE, NO_PROXY="localhost,127.0.0.1",
               no_proxy="localhost,127.0.0.1")

    def launcher(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", "data", "--dest", str(data),
                               *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)

    refused = launcher("--delete")
    assert refused.returncode != 0 and "--delete only goes with --upload" in refused.stderr
    files = local(data)
    first = launcher("--upload")
    assert first.returncode == 0, first.stderr
    size = sum(path.stat().st_size for path in files.values()) / 1e6
    assert (f"uploaded {len(files)} file(s) / {size:.1f} MB to s3://{bucket}/proj/data, "
            "unchanged 0, extra 0") in first.stdout
    (data / "test" / "002.Afghan_hound").rename(tmp_path / "moved")
    gone = len(list((tmp_path / "moved").iterdir()))
    second = launcher("--upload", "--delete")
    assert second.returncode == 0, second.stderr
    assert (f"uploaded 0 file(s) / 0.0 MB to s3://{bucket}/proj/data, unchanged "
            f"{len(files) - gone}, extra {gone} deleted") in second.stdout
    assert sorted(objects(s3, bucket, "proj/data/")) == sorted(local(data))


def test_an_etag_that_is_no_md5_falls_back_to_the_sha256_metadata(s3, bucket, data):
    """Multipart uploads (and SSE-KMS) give ETags that are not the content's MD5: the
    object's sha256 metadata decides, and an object without it is sent again."""
    files = local(data)
    sync(data, f"s3://{bucket}/data", s3)
    with_metadata, without = sorted(files)[:2]

    def multipart(name: str, body: bytes, metadata: dict[str, str]) -> None:
        key = f"data/{name}"
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)
        part = s3.upload_part(Bucket=bucket, Key=key, PartNumber=1, Body=body,
                              UploadId=upload["UploadId"])
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"ETag": part["ETag"],
                                                                 "PartNumber": 1}]})
        assert s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"').endswith("-1")

    for name in (with_metadata, without):
        body = files[name].read_bytes()
        multipart(name, body, {} if name == without else
                  {"sha256": hashlib.sha256(body).hexdigest()})
    before = writes(s3, bucket)
    again = sync(data, f"s3://{bucket}/data", s3)
    assert (again.sent, again.unchanged) == (1, len(files) - 1)
    assert writes(s3, bucket) == before + Counter([f"data/{without}"])
    assert s3.head_object(Bucket=bucket, Key=f"data/{without}")["Metadata"]["sha256"] == \
        hashlib.sha256(files[without].read_bytes()).hexdigest()
