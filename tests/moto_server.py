"""moto in server mode on a free port, recording every request it gets: the AWS control
plane for tests, read back request by request."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from conftest import free_port


class Moto:
    """`python -m moto.server` on a free port, recording every request it gets."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.recording = folder / "recording.jsonl"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-p", str(self.port)],
            env=dict(os.environ, MOTO_RECORDER_FILEPATH=str(self.recording)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        requests.post(f"{self.url}/moto-api/recorder/start-recording").raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def requests(self, target: str | None = None) -> list[dict]:
        """Recorded requests; for a JSON API, those whose X-Amz-Target ends with target."""
        found = []
        for entry in _entries(self.recording.read_text()):
            body = entry["body"]
            if entry["body_encoded"]:
                body = base64.b64decode(body)
            entry["raw"] = body
            name = entry["headers"].get("X-Amz-Target", "")
            if target is None or name.endswith("." + target):
                if name:
                    entry["json"] = json.loads(body or "{}")
                found.append(entry)
        return found

    def one(self, target: str) -> dict:
        sent = self.requests(target)
        assert len(sent) == 1, [e["headers"].get("X-Amz-Target") for e in self.requests()]
        return sent[0]["json"]


def _entries(text: str):
    """The recorded entries, in order. moto appends each entry and its newline in two
    writes, so requests served in parallel (an S3 upload runs 16 at a time) can leave two
    entries on one line: read object after object instead of line by line."""
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return
        entry, position = decoder.raw_decode(text, position)
        yield entry
