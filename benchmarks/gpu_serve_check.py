"""Serving's model path on a GPU: the same artifact predicts the same on cuda as on cpu, and
how fast a batch goes. (MMS itself needs Java, which the lent GPU machine lacks.)

    python benchmarks/gpu_serve_check.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from serve_latency import photo_jpeg, write_random_model  # noqa: E402

from dogbreed.serving.codec import Limits, decode_images  # noqa: E402
from dogbreed.serving.predictor import BreedClassifier  # noqa: E402


def main() -> None:
    assert torch.cuda.is_available(), "no GPU"
    with tempfile.TemporaryDirectory() as tmp:
        write_random_model(Path(tmp) / "model")
        images = decode_images(photo_jpeg(), "image/jpeg", Limits()) * 8
        cpu = BreedClassifier.load(Path(tmp) / "model", device="cpu")
        gpu = BreedClassifier.load(Path(tmp) / "model", device="cuda:0")
        gpu.warm_up()
        on_cpu, on_gpu = cpu.predict(images[:1]), gpu.predict(images[:1])
        assert [p["class_id"] for p in on_cpu[0]] == [p["class_id"] for p in on_gpu[0]], (on_cpu, on_gpu)
        worst = max(abs(a["probability"] - b["probability"]) for a, b in zip(on_cpu[0], on_gpu[0]))
        print(f"cpu vs cuda top-5 identical, largest probability difference {worst:.2e}")
        for batch in (1, 8):
            times = []
            for _ in range(30):
                started = time.perf_counter()
                gpu.predict(images[:batch])
                torch.cuda.synchronize()
                times.append((time.perf_counter() - started) * 1000)
            print(f"cuda predict, batch {batch} (preprocess + forward + top-k): p50 "
                  f"{statistics.median(times):.1f} ms")


if __name__ == "__main__":
    main()
