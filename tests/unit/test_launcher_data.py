"""`launcher data` against a real HTTP server that serves a dogImages-shaped zip, supports
Range requests, and can break a download off half-way."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import zipfile
from pathlib import Path

import pytest

from launcher import data as dataset
from launcher.cli import main as launcher_main
from launcher.errors import LauncherError


class ZipServer(http.server.ThreadingHTTPServer):
    """Serves one file at /dogImages.zip; `break_after` bytes, then it hangs up (once)."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.break_after: int | None = None
        self.ranges: list[str | None] = []
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dogImages.zip"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server: ZipServer = self.server
        requested = self.headers.get("Range")
        server.ranges.append(requested)
        start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
        body = server.payload[start:]
        self.send_response(206 if requested else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.break_after is not None:
            cut, server.break_after = server.break_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # the network went away
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def archive_bytes(sample_data, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("zip") / "dogImages.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(sample_data.rglob("*")):
            if file.is_file():
                archive.write(file, Path("dogImages") / file.relative_to(sample_data))
    return path.read_bytes()


@pytest.fixture
def server(archive_bytes):
    running = ZipServer(archive_bytes)
    yield running
    running.shutdown()


def test_an_interrupted_download_resumes_and_the_data_validates(server, archive_bytes, tmp_path):
    target = tmp_path / "dogImages.zip"
    server.break_after = len(archive_bytes) // 3
    with pytest.raises(LauncherError, match="run the same command again to continue"):
        dataset.download(server.url, target, len(archive_bytes))
    kept = (tmp_path / "dogImages.zip.part").stat().st_size
    # What arrived is kept (all but the last, unfinished chunk), and the next run asks for
    # the rest only.
    assert len(archive_bytes) // 3 - dataset.CHUNK < kept <= len(archive_bytes) // 3
    dataset.download(server.url, target, len(archive_bytes))
    assert server.ranges == [None, f"bytes={kept}-"]
    assert target.read_bytes() == archive_bytes
    root = dataset.unzip(target, tmp_path)
    assert root == tmp_path / "dogImages"
    report = dataset.validate(root)
    assert report["problems"] == []
    assert {split: facts["images"] for split, facts in report["splits"].items()} == \
        {"train": 120, "valid": 15, "test": 15}
    assert len(report["unreadable"]) == 2
    assert "train/001.Affenpinscher/truncated_0000.jpg" in dataset.validation_summary(report)
    # Already complete: not downloaded again.
    dataset.download(server.url, target, len(archive_bytes))
    assert len(server.ranges) == 2


def test_a_wrong_size_is_refused_and_the_bytes_are_kept(server, archive_bytes, tmp_path):
    target = tmp_path / "dogImages.zip"
    with pytest.raises(LauncherError, match=f"expected {len(archive_bytes) + 5:,}"):
        dataset.download(server.url, target, len(archive_bytes) + 5)
    assert not target.exists()
    assert (tmp_path / "dogImages.zip.part").stat().st_size == len(archive_bytes)


def test_http_errors_and_unreachable_servers_are_clear(server, tmp_path):
    with pytest.raises(LauncherError, match="cannot download http://127.0.0.1:9/x.zip"):
        dataset.download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", None)


def test_a_broken_zip_is_refused(tmp_path):
    broken = tmp_path / "dogImages.zip"
    broken.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(LauncherError, match="is not a valid zip file"):
        dataset.unzip(broken, tmp_path / "out")


def test_validation_finds_missing_splits_and_foreign_classes(sample_data, tmp_path):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(sample_data / "train", root / "train")
    shutil.copytree(sample_data / "valid", root / "valid")
    (root / "valid" / "999.Not_a_breed").mkdir()
    shutil.copy(next((sample_data / "valid" / "002.Afghan_hound").glob("*.jpg")),
                root / "valid" / "999.Not_a_breed" / "x.jpg")
    (root / "train" / "004.Akita_empty").mkdir()
    report = dataset.validate(root)
    assert "valid has classes that train lacks: 999.Not_a_breed" in report["problems"]
    assert "train: no readable image in 004.Akita_empty" in report["problems"]
    shutil.rmtree(root / "valid")
    assert any("no valid folder under" in problem for problem in dataset.validate(root)["problems"])


def test_a_wrong_sha256_is_refused_and_the_file_kept_aside(server, archive_bytes, tmp_path):
    right = hashlib.sha256(archive_bytes).hexdigest()
    wrong = "0" * 64
    target = tmp_path / "dogImages.zip"
    with pytest.raises(LauncherError, match=f"has SHA-256 {right}, but data.sha256 is {wrong}: "
                       "refused and moved to .*dogImages.zip.bad-sha256"):
        dataset.download(server.url, target, len(archive_bytes), wrong)
    assert not target.exists()
    assert (tmp_path / "dogImages.zip.bad-sha256").read_bytes() == archive_bytes
    # The right digest (in either case) passes, for a fresh download and for one already here.
    assert dataset.download(server.url, target, len(archive_bytes), right.upper()) == target
    assert dataset.download(server.url, target, len(archive_bytes), right) == target
    assert len(server.ranges) == 2
    # A file already here that does not match is moved aside too, not trusted for its size.
    with pytest.raises(LauncherError, match="refused and moved to"):
        dataset.download(server.url, target, len(archive_bytes), wrong)
    assert not target.exists() and len(server.ranges) == 2


def test_the_data_command_checks_the_configured_sha256(server, archive_bytes, tmp_path,
                                                     monkeypatch, capsys):
    """`python -m launcher data` as typed in a project folder (its main() in process)."""
    (tmp_path / "launcher.toml").write_text(
        f'[data]\nurl = "{server.url}"\nsize_bytes = {len(archive_bytes)}\n'
        f'sha256 = "{"ab" * 32}"\n')
    monkeypatch.chdir(tmp_path)
    assert launcher_main(["data", "--dest", "data/dogImages"]) != 0
    assert f"but data.sha256 is {'ab' * 32}" in capsys.readouterr().err
    assert (tmp_path / "data" / "dogImages.zip.bad-sha256").stat().st_size == len(archive_bytes)
    assert not (tmp_path / "data" / "dogImages").exists()


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return path


@pytest.mark.parametrize("name", ["dogImages/train/../../escaped.jpg", "/etc/escaped.jpg",
                                  "dogImages\\..\\..\\escaped.jpg", "C:/escaped.jpg"])
def test_a_member_that_escapes_the_folder_is_refused(tmp_path, name):
    archive = zip_with(tmp_path / "dogImages.zip", {
        "dogImages/train/001.A/a.jpg": b"jpeg", name: b"evil"})
    with pytest.raises(LauncherError, match=re.escape(f"member {name!r} would be written outside")):
        dataset.unzip(archive, tmp_path / "out" / "in")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped.jpg").exists()


def test_a_member_that_expands_like_a_zip_bomb_is_refused(tmp_path):
    archive = zip_with(tmp_path / "dogImages.zip", {
        "dogImages/train/001.A/a.jpg": b"jpeg",
        "dogImages/train/001.A/notes.txt": b"ordinary text " * 1000,  # small: allowed
        "dogImages/valid/001.A/bomb.jpg": bytes(64 << 20)})  # 64 MiB of zeros: ~1000:1
    with pytest.raises(LauncherError, match=r"member 'dogImages/valid/001.A/bomb.jpg' expands "
                       r"[\d,]+ bytes to 67,108,864 \([\d,]+:1, more than 100:1\)"):
        dataset.unzip(archive, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dogImages.zip"]
