"""What does the server add on top of the model? Latency, throughput, cold start, memory.

In one run, on one machine:
  - in process: BreedClassifier.predict on one decoded 224 px photo, with the threads one
    server worker gets (cores / workers) and with all cores;
  - `python -m dogbreed.serve` (MMS, Java, 2 workers) started for real: cold start (launch
    to first successful prediction), then POST /invocations of the same JPEG, sequential
    and from 4 concurrent clients: p50/p99 latency and requests/s;
  - resident memory of the whole server process tree.
The model is a ResNet50 with random weights and a 133-way head, written as a real artifact
(ImageNet weights cannot be downloaded here; the arithmetic is the same).

    .venv/bin/python benchmarks/serve_latency.py [--requests 60] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
import torch

from dogbreed.artifact import write_artifact
from dogbreed.images import open_rgb
from dogbreed.model import build_model
from dogbreed.sample_data import draw_image
from dogbreed.serving.predictor import BreedClassifier
from dogbreed.transforms import eval_preprocessing

CLASSES = 133


def write_random_model(model_dir: Path) -> None:
    names = [f"Breed {i:03d}" for i in range(CLASSES)]
    write_artifact(model_dir, state_dict=build_model(CLASSES, "none", "fc").state_dict(),
                   architecture="resnet50", class_folders=names, class_names=names,
                   preprocessing=eval_preprocessing(224), hyperparameters={}, metrics={},
                   history=[], training={})


def photo_jpeg() -> bytes:
    """A 500x375 JPEG, the median size of the dog-breed photos."""
    import random
    image = draw_image(3, 10, random.Random(0)).resize((500, 375))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def in_process_ms(classifier: BreedClassifier, jpeg: bytes, threads: int, count: int) -> list[float]:
    torch.set_num_threads(threads)
    classifier.predict([open_rgb(io.BytesIO(jpeg))])  # warm-up
    times = []
    for _ in range(count):
        started = time.perf_counter()
        classifier.predict([open_rgb(io.BytesIO(jpeg))])  # decode + preprocess + forward
        times.append((time.perf_counter() - started) * 1000)
    return times


def timed_posts(url: str, jpeg: bytes, count: int) -> list[float]:
    times = []
    with requests.Session() as session:
        for _ in range(count):
            started = time.perf_counter()
            response = session.post(url, data=jpeg, headers={"Content-Type": "image/jpeg"},
                                    timeout=60)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return times


def tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    processes = [root] + root.children(recursive=True)
    # Java runs in its own session under serve's child; children() still finds it.
    return sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="per measurement")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_random_model(base / "model")
        jpeg = photo_jpeg()
        classifier = BreedClassifier.load(base / "model")
        worker_threads = max(1, cores // args.workers)
        local_worker = in_process_ms(classifier, jpeg, worker_threads, args.requests)
        local_all = in_process_ms(classifier, jpeg, cores, args.requests)
        del classifier

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = dict(os.environ, SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_BIND_TO_PORT=str(port),
                   SAGEMAKER_MODEL_SERVER_WORKERS=str(args.workers))
        url = f"http://127.0.0.1:{port}/invocations"
        launched = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "dogbreed.serve"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    if requests.post(url, data=jpeg, headers={"Content-Type": "image/jpeg"},
                                     timeout=60).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert server.poll() is None, "serve exited"
                time.sleep(0.1)
            cold_start = time.perf_counter() - launched
            timed_posts(url, jpeg, 5)  # both workers warm
            sequential = timed_posts(url, jpeg, args.requests)
            concurrent_started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=4) as pool:
                parallel = [t for times in pool.map(
                    lambda _: timed_posts(url, jpeg, args.requests // 2), range(4)) for t in times]
            concurrent_seconds = time.perf_counter() - concurrent_started
            memory = tree_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)

    def row(name: str, times: list[float], throughput: float | None = None) -> str:
        rate = f"{throughput:.1f} req/s" if throughput else f"{1000 / statistics.median(times):.1f} req/s"
        return (f"{name:<44} p50 {statistics.median(times):7.1f} ms  p99 "
                f"{percentile(times, 99):7.1f} ms  {rate}")

    print(f"{cores} cores, {args.workers} server workers, 500x375 JPEG ({len(jpeg)} bytes), "
          f"224 px ResNet50, {args.requests} requests per measurement")
    print(row(f"in process, {worker_threads} thread(s) (one worker's share)", local_worker))
    print(row(f"in process, {cores} threads", local_all))
    print(row("server, sequential", sequential))
    print(row("server, 4 concurrent clients", parallel, len(parallel) / concurrent_seconds))
    overhead = statistics.median(sequential) / statistics.median(local_worker) - 1
    print(f"server overhead at p50 over the in-process call with a worker's threads: "
          f"{overhead * 100:+.1f} %")
    print(f"cold start (launch to first prediction): {cold_start:.1f} s; server memory (RSS, "
          f"all processes): {memory:.0f} MB")


if __name__ == "__main__":
    main()
