"""The serving worker's batch path in process, on any device: how close does it come to the
model alone? (MMS needs Java, which the lent GPU machine lacks: there this is the serving
figure; on CPUs `serve_concurrency.py` measures the whole server.)

In one run, on `--device` (cuda:0 when there is one):
  - model only: the forward pass and top-k on a batch of 32 already preprocessed on the
    device, at the precision the worker picks: the ceiling;
  - the worker's batch path: `BreedTransformer.transform` (the handler MMS calls) with
    MMS's own Context over N request bodies (500x375 JPEGs, N = 1, 8, 32): decode on the
    worker's threads, crop, normalise on the device, forward, one answer per request;
  - on a GPU, the same artifact's top-5 on the CPU and on the GPU.

    .venv/bin/python benchmarks/serve_batch_path.py [--device cpu] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from mms.context import Context, RequestProcessor

sys.path.insert(0, str(Path(__file__).parent))
from serve_latency import photo_jpeg, write_random_model  # noqa: E402

from dogbreed.serving.handler import BreedTransformer  # noqa: E402
from dogbreed.serving.predictor import BreedClassifier  # noqa: E402

MODEL_BATCH = 32


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(classifier: BreedClassifier, rounds: int) -> float:
    """Images/s of forward + softmax + top-k on a preprocessed batch on the device."""
    size = classifier.preprocessing["center_crop"]
    batch = torch.randn(MODEL_BATCH, 3, size, size, device=classifier.device).to(
        classifier.dtype).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(rounds + 1):
            started = time.perf_counter()
            torch.softmax(classifier.model(batch).float(), dim=1).topk(5, dim=1)[0].cpu()
            synchronize(classifier.device)
            times.append(time.perf_counter() - started)
    return MODEL_BATCH / statistics.median(times[1:])


def batch_path(model_dir: Path, device: str, body: bytes, requests: int, rounds: int
               ) -> float:
    """Images/s of the handler answering `requests` requests as one MMS batch."""
    gpu = device.split(":")[1] if device.startswith("cuda") else None
    context = Context("model", str(model_dir), {}, requests, gpu, "1.1.11")
    transformer = BreedTransformer()
    data = [{"body": body} for _ in range(requests)]
    times = []
    for _ in range(rounds + 1):
        context.request_processor = [RequestProcessor({"content-type": "image/jpeg"})
                                     for _ in range(requests)]
        started = time.perf_counter()
        answers = transformer.transform(data, context)
        times.append(time.perf_counter() - started)
        statuses = {context.get_response_status(index)[0] for index in range(requests)}
        assert statuses == {200} and len(answers) == requests, (statuses, answers[:1])
    return requests / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        write_random_model(model_dir)
        body = photo_jpeg()
        classifier = BreedClassifier.load(model_dir, device=device)
        print(f"device {device}, precision {classifier.dtype}, {torch.get_num_threads()} "
              f"threads, 224 px ResNet50, 500x375 JPEG requests")
        if device.type == "cuda":
            cpu = BreedClassifier.load(model_dir, precision="fp32")
            from dogbreed.serving.codec import Limits, decode_images
            images = decode_images(body, "image/jpeg", Limits(), cpu.decode_size)
            on_cpu, on_gpu = cpu.predict(images)[0], classifier.predict(images)[0]
            worst = max(abs(a["probability"] - b["probability"]) for a, b in zip(on_cpu, on_gpu))
            same = [p["class_id"] for p in on_cpu] == [p["class_id"] for p in on_gpu]
            print(f"cpu fp32 vs {device} {classifier.dtype}: top-5 "
                  f"{'identical' if same else 'DIFFERENT'}, largest probability difference "
                  f"{worst:.2e}")
        ceiling = model_only(classifier, args.rounds)
        print(f"model only, batch {MODEL_BATCH}: {ceiling:,.0f} img/s (the ceiling)")
        del classifier
        for requests in (1, 8, MODEL_BATCH):
            rate = batch_path(model_dir, args.device, body, requests, args.rounds)
            print(f"handler batch path, {requests:>2} requests per batch: {rate:,.1f} img/s "
                  f"= {rate / ceiling:.2f} of the model alone")


if __name__ == "__main__":
    main()
