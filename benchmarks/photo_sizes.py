"""What a phone photo costs the request path: full decode against reduced-scale decode.

In process, with the threads one server worker gets (cores / 2 workers): the worker's own
request path, `decode_images` (header check, decode, EXIF, RGB) then
`BreedClassifier.predict` (eval preprocessing, forward pass), on JPEGs of 0.2, 2, 12 and
48 megapixels (a 500x375 photo upscaled, as a new user tried it; 12 MP also progressive).
Each size runs both ways alternately: `full` decodes every pixel (the path before DCT
scaling; the pixel limit lifted so 48 MP runs at all), `reduced` decodes at 1/2-1/8 scale
while the photo stays twice the eval resize (`BreedClassifier.decode_size`). Prints the
median per size and the ratio. The model is a random ResNet50 with a 133-way head at
224 px, written as a real artifact.

    .venv/bin/python benchmarks/photo_sizes.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import photo_jpeg, write_random_model  # noqa: E402

from dogbreed.serving.codec import Limits, decode_images  # noqa: E402
from dogbreed.serving.predictor import BreedClassifier  # noqa: E402

SIZES = {"0.2 MP": (500, 375), "2 MP": (1600, 1200), "12 MP": (4000, 3000),
         "12 MP progressive": (4000, 3000), "48 MP": (8000, 6000)}


def phone_jpeg(width: int, height: int, progressive: bool) -> bytes:
    photo = Image.open(io.BytesIO(photo_jpeg())).resize((width, height),
                                                        Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def request_ms(classifier: BreedClassifier, body: bytes, decode_size) -> float:
    started = time.perf_counter()
    images = decode_images(body, "image/jpeg", Limits(max_pixels=10**9,
                                                      max_request_pixels=10**9,
                                                      max_payload_bytes=10**9), decode_size)
    classifier.predict(images)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    with tempfile.TemporaryDirectory() as tmp:
        write_random_model(Path(tmp) / "model")
        classifier = BreedClassifier.load(Path(tmp) / "model")
        classifier.warm_up()
        print("| photo | bytes | full decode p50 (ms) | reduced-scale p50 (ms) | full / "
              "reduced |\n|---|---|---|---|---|")
        for name, (width, height) in SIZES.items():
            body = phone_jpeg(width, height, progressive="progressive" in name)
            times = {"full": [], "reduced": []}
            for _ in range(args.rounds):
                times["full"].append(request_ms(classifier, body, None))
                times["reduced"].append(request_ms(classifier, body, classifier.decode_size))
            full, reduced = (statistics.median(times[key]) for key in ("full", "reduced"))
            print(f"| {name} ({width}x{height}) | {len(body):,} | {full:.0f} | {reduced:.0f} "
                  f"| {full / reduced:.2f} |", flush=True)
        print(f"threads {torch.get_num_threads()}, {args.rounds} alternating rounds, medians")


if __name__ == "__main__":
    main()
