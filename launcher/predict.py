"""Send image files to an endpoint and show the top-k breeds per image.

HTTP straight to the container's `/invocations` for the two local backends; a real
`InvokeEndpoint` (boto3) for SageMaker. Each file is checked before it is sent, and a
file the endpoint refuses is reported with the endpoint's reason while the others go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from launcher.errors import LauncherError

MAX_BYTES = 6 * 1024 * 1024  # SageMaker's real-time payload limit
# ISO-BMFF brands of HEVC-coded HEIF files (what phones write as .heic).
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


@dataclass
class Answer:
    image: Path
    status: int
    predictions: list[dict] | None
    error: str | None


def content_type_of(path: Path) -> str:
    """The image's Content-Type from the file's first bytes (JPEG, PNG, WebP, HEIC), or a
    clear error."""
    if not path.is_file():
        raise LauncherError(f"image {path} not found")
    content_type = _sniff(path.open("rb").read(12))
    if content_type is None:
        raise LauncherError(f"{path} is not a JPEG, PNG, WebP or HEIC image")
    if path.stat().st_size > MAX_BYTES:
        raise LauncherError(f"image {path} is {path.stat().st_size / 2**20:.1f} MiB; an "
                            "endpoint takes at most 6 MiB per request")
    return content_type


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "image/heic"
    return None


def http_invoker(url: str, timeout: float = 60) -> Callable[[bytes, str, int], tuple[int, bytes]]:
    import requests

    def invoke(body: bytes, content_type: str, top_k: int) -> tuple[int, bytes]:
        try:
            answer = requests.post(f"{url}/invocations", data=body, timeout=timeout, headers={
                "Content-Type": content_type, "Accept": "application/json",
                "X-Amzn-SageMaker-Custom-Attributes": f"top_k={top_k}"})
        except requests.RequestException as error:
            raise LauncherError(f"cannot reach the endpoint at {url}: {error} (is it deployed? "
                                "`python -m launcher deploy`)") from None
        return answer.status_code, answer.content
    return invoke


def predict_images(images: list[Path], invoke: Callable[[bytes, str, int], tuple[int, bytes]],
                   top_k: int) -> list[Answer]:
    types = {image: content_type_of(image) for image in images}  # all checked before any call
    answers = []
    for image in images:
        status, body = invoke(image.read_bytes(), types[image], top_k)
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            document = {"error": body[:200].decode("utf-8", "replace")}
        predictions = document.get("predictions")
        if status == 200 and isinstance(predictions, list) and predictions:
            answers.append(Answer(image, status, predictions[0], None))
        else:
            reason = document.get("error") or f"unexpected answer: {body[:200]!r}"
            answers.append(Answer(image, status, None, str(reason)))
    return answers


def answers_table(answers: list[Answer]) -> str:
    lines = []
    for answer in answers:
        lines.append(f"{answer.image}")
        if answer.error is not None:
            lines.append(f"  refused ({answer.status}): {answer.error}")
            continue
        width = max(len(p["label"]) for p in answer.predictions)
        for rank, prediction in enumerate(answer.predictions, 1):
            bar = "#" * round(prediction["probability"] * 20)
            lines.append(f"  {rank}. {prediction['label']:<{width}}  "
                         f"{prediction['probability']:6.1%}  {bar}")
    return "\n".join(lines)
