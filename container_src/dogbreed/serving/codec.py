"""Requests to images, predictions to responses: the endpoint's wire format.

Everything a client can get wrong is caught here and raised as `ClientError` with the
HTTP status it deserves (400 bad body, 413 too large, 415 content type, 406 accept).
Nothing here unpickles: images go through PIL, JSON through `json`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import pillow_heif
from PIL import Image

from dogbreed.images import open_rgb

pillow_heif.register_heif_opener()  # HEIC/HEIF, what iPhones write by default
# What phones and browsers send; the format itself is read from the bytes.
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif",
                       "application/x-image")
FORMATS = "JPEG, PNG, WebP or HEIC"
JSON_CONTENT_TYPE = "application/json"
ACCEPTABLE = ("application/json", "*/*", "application/*")
MAX_PIXELS_ENV = "DOGBREED_MAX_IMAGE_PIXELS"
MAX_INSTANCES_ENV = "DOGBREED_MAX_INSTANCES"
MAX_REQUEST_PIXELS_ENV = "DOGBREED_MAX_REQUEST_PIXELS"
MAX_PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
# The pixels an image decodes to (a JPEG much larger than the model's input decodes at 1/2
# to 1/8 scale: a 48-megapixel phone photo to 0.75 MP), not its header's size: 40e6 serves
# any phone photo while a decompression bomb (a small file that decodes to gigabytes) is
# refused before it is decoded.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_INSTANCES = 64
# All images of one request together: about 8 phone photos (each decodes to ~36 MB).
DEFAULT_MAX_REQUEST_PIXELS = 100_000_000
DEFAULT_MAX_PAYLOAD_MB = 6  # SageMaker's own limit for real-time endpoints
MAX_PAYLOAD_MB = 100  # the largest MaxPayloadInMB a batch transform job takes
MAX_TOP_K = 1000
# Breeds per answer when a request names none: a transform job's requests carry no custom
# attributes, so its top-k can only come from the container's environment.
TOP_K_ENV = "DOGBREED_TOP_K"
_TOP_K = re.compile(r"(?:^|[,;\s])top_k=([^,;\s]*)")


class ClientError(Exception):
    """A request the server refuses; `status` is the HTTP status code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_MB * 1024 * 1024

    @classmethod
    def from_environment(cls) -> "Limits":
        return cls(
            max_pixels=int(os.environ.get(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)),
            max_instances=int(os.environ.get(MAX_INSTANCES_ENV, DEFAULT_MAX_INSTANCES)),
            max_request_pixels=int(os.environ.get(MAX_REQUEST_PIXELS_ENV,
                                                  DEFAULT_MAX_REQUEST_PIXELS)),
            max_payload_bytes=int(max_payload_mb_from_environment() * 1024 * 1024))


def max_payload_mb_from_environment() -> float:
    """SAGEMAKER_MAX_PAYLOAD_IN_MB: the real-time default when unset, or 0 (a transform job
    that set no MaxPayloadInMB). ValueError names the bad value."""
    value = os.environ.get(MAX_PAYLOAD_ENV, "").strip()
    try:
        megabytes = float(value) if value else 0.0
    except ValueError:
        megabytes = -1.0
    if not 0 <= megabytes <= MAX_PAYLOAD_MB:
        raise ValueError(f"{MAX_PAYLOAD_ENV}={value!r}: megabytes per request, up to "
                         f"{MAX_PAYLOAD_MB}")
    return megabytes or DEFAULT_MAX_PAYLOAD_MB


def media_type(header: str | None) -> str:
    """`image/jpeg; q=0.9` -> `image/jpeg`."""
    return (header or "").split(";")[0].strip().lower()


def check_accept(accept: str | None) -> None:
    """Answers are JSON only; an Accept that rules JSON out gets 406."""
    if not accept:
        return
    offered = [media_type(part) for part in accept.split(",")]
    if not any(kind in ACCEPTABLE for kind in offered):
        raise ClientError(406, f"cannot answer with {accept!r}: responses are application/json")


def default_top_k_from_environment(fallback: int) -> int:
    """DOGBREED_TOP_K, or `fallback` when it is unset (serve checks it at start)."""
    value = os.environ.get(TOP_K_ENV, "").strip()
    return int(value) if value else fallback


def parse_top_k(custom_attributes: str | None, default: int) -> int:
    """`top_k=N` from X-Amzn-SageMaker-Custom-Attributes (other attributes are ignored)."""
    match = _TOP_K.search(custom_attributes or "")
    if not match:
        return default
    try:
        top_k = int(match.group(1))
    except ValueError:
        top_k = 0
    if not 1 <= top_k <= MAX_TOP_K:
        raise ClientError(400, f"top_k must be a whole number from 1 to {MAX_TOP_K}, got "
                               f"{match.group(1)!r}")
    return top_k


def decode_images(body: bytes, content_type: str | None, limits: Limits,
                  decode_size: tuple[int, int] | None = None) -> list[Image.Image]:
    """The request body as RGB images: one for an image body, several for JSON instances.
    `decode_size`: a JPEG at least that much larger decodes at a reduced scale (DCT
    scaling), never below that size."""
    kind = media_type(content_type)
    if kind not in IMAGE_CONTENT_TYPES + (JSON_CONTENT_TYPE,):
        raise ClientError(415, f"unsupported Content-Type {content_type!r}: send "
                               f"{', '.join(IMAGE_CONTENT_TYPES)} or {JSON_CONTENT_TYPE} "
                               '{"instances": ["<base64 image>", ...]}')
    if isinstance(body, str):
        body = body.encode("utf-8")
    body = bytes(body)
    if not body:
        raise ClientError(400, "empty request body: send an image")
    if len(body) > limits.max_payload_bytes:
        raise ClientError(413, f"payload of {len(body)} bytes is over the limit of "
                               f"{limits.max_payload_bytes} bytes")
    if kind == JSON_CONTENT_TYPE:
        named = [(f"instance {i}", raw) for i, raw in enumerate(_json_instances(body, limits))]
    else:
        named = [("the body", body)]
    # Every header first, then decode: many small files of huge images would otherwise
    # take the worker's memory before the total is known.
    total = sum(_decoded_pixels(raw, limits, name, decode_size) for name, raw in named)
    if total > limits.max_request_pixels:
        raise ClientError(413, f"the request's images hold {total} pixels together, over the "
                               f"limit of {limits.max_request_pixels}; send fewer per request")
    return [_decode_image(raw, name, decode_size) for name, raw in named]


def encode_predictions(predictions: list[list[dict[str, Any]]]) -> str:
    return json.dumps({"predictions": predictions})


def encode_error(message: str) -> str:
    return json.dumps({"error": message})


def _json_instances(body: bytes, limits: Limits) -> list[bytes]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ClientError(400, f"body is not valid JSON: {error}") from None
    except RecursionError:
        raise ClientError(400, "body is not valid JSON: nested too deeply") from None
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ClientError(400, 'JSON body must be {"instances": ["<base64 image>", ...]} with '
                               "at least one instance")
    if len(instances) > limits.max_instances:
        raise ClientError(413, f"{len(instances)} instances in one request; the limit is "
                               f"{limits.max_instances}")
    decoded = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and set(instance) == {"b64"}:
            instance = instance["b64"]  # the TensorFlow Serving convention, also accepted
        if not isinstance(instance, str):
            raise ClientError(400, f"instance {i} is not a base64 string")
        try:
            decoded.append(base64.b64decode(instance, validate=True))
        except (binascii.Error, ValueError):
            raise ClientError(400, f"instance {i} is not valid base64") from None
    return decoded


def _decoded_pixels(data: bytes, limits: Limits, what: str,
                    decode_size: tuple[int, int] | None) -> int:
    """width x height that decoding will produce, from the header alone (with the JPEG
    scale `decode_size` allows); refuses one image over the limit."""
    if not data:
        raise ClientError(400, f"{what} is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            full = probe.size
            if decode_size is not None:
                probe.draft("RGB", decode_size)  # JPEG only: sets the size it will decode
            width, height = probe.size
    except Image.DecompressionBombError:
        raise ClientError(400, f"{what} is an image too large to decode") from None
    except Exception:  # PIL raises many types for data that is not an image
        raise ClientError(400, f"{what} is not a decodable {FORMATS} image") from None
    if width * height > limits.max_pixels:
        scaled = f" (decoded at {width}x{height})" if (width, height) != full else ""
        raise ClientError(400, f"{what} is {full[0]}x{full[1]} pixels{scaled}, over the "
                               f"limit of {limits.max_pixels} decoded pixels")
    return width * height


def _decode_image(data: bytes, what: str, decode_size: tuple[int, int] | None) -> Image.Image:
    try:
        return open_rgb(io.BytesIO(data), draft_size=decode_size)
    except Exception:
        raise ClientError(400, f"{what} is a damaged or truncated image") from None
