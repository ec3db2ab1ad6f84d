"""Serving under concurrency: the server before batching against this one, batching off
and on, side by side in one run.

Each configuration is a real `python -m dogbreed.serve` (MMS, Java, workers) with its own
defaults, started in turn, in alternating rounds:
  - before: another checkout's code (`--before DIR`, e.g. the previous commit extracted
    with `git archive`), its default workers;
  - after, batching off: this code with DOGBREED_BATCH_SIZE=1;
  - after, batching on: this code with its defaults.
Per configuration: cold start (launch to first 200), p50 per photo size (0.2, 2, 12 and
48 MP JPEG, sequential), then throughput and p50/p99 latency at 1, 4, 16 and 64
concurrent clients over photos of varied sizes, mostly 500x375 like the real data.
The model is a 224 px ResNet50 with random weights and a 133-way head.

    git archive HEAD~1 | tar -x -C /tmp/before
    .venv/bin/python benchmarks/serve_concurrency.py --before /tmp/before [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from dogbreed.sample_data import draw_image
from serve_latency import percentile, tree_rss_mb, write_random_model

CONCURRENCY = (1, 4, 16, 64)
PHOTO_SIZES = {"0.2 MP": (500, 375), "2 MP": (1600, 1200), "12 MP": (4000, 3000),
               "48 MP": (8000, 6000)}
# The mix: 70 % at the real data's median size, the rest smaller and larger.
MIX = [(500, 375)] * 14 + [(375, 500), (300, 225), (800, 600), (1024, 768), (1600, 1200),
                           (640, 480)]


def jpeg(width: int, height: int, seed: int) -> bytes:
    image = draw_image(seed % 7, 10, random.Random(seed)).resize((width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class Server:
    def __init__(self, base: Path, pythonpath: str, env: dict):
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/invocations"
        self.env = dict(os.environ, SAGEMAKER_BASE_DIR=str(base),
                        SAGEMAKER_BIND_TO_PORT=str(self.port), PYTHONPATH=pythonpath, **env)
        self.env.pop("SAGEMAKER_MODEL_SERVER_WORKERS", None)

    def start(self, probe: bytes) -> float:
        launched = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "dogbreed.serve"], env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                if requests.post(self.url, data=probe, headers={"Content-Type": "image/jpeg"},
                                 timeout=60).status_code == 200:
                    return time.perf_counter() - launched
            except requests.ConnectionError:
                pass
            assert self.process.poll() is None, "serve exited"
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def post(session: requests.Session, url: str, body: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    status = session.post(url, data=body, headers={"Content-Type": "image/jpeg"},
                          timeout=120).status_code
    return (time.perf_counter() - started) * 1000, status


def photo_p50s(url: str, photos: dict[str, bytes], repeats: int) -> dict[str, str]:
    result = {}
    with requests.Session() as session:
        for name, body in photos.items():
            times = [post(session, url, body) for _ in range(repeats)]
            if any(status != 200 for _, status in times):
                result[name] = f"refused ({times[0][1]})"
            else:
                result[name] = f"{statistics.median(t for t, _ in times):.0f}"
    return result


def under_load(url: str, mix: list[bytes], clients: int, per_client: int
               ) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) with `clients` clients sending back to back."""
    times: list[float] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with requests.Session() as session:
            post(session, url, mix[number % len(mix)])  # connect, outside the timing
            for index in range(per_client):
                elapsed, status = post(session, url, mix[(number + index) % len(mix)])
                assert status == 200, status
                with lock:
                    times.append(elapsed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return len(times) / seconds, statistics.median(times), percentile(times, 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True,
                        help="a checkout of the code to compare with (its container_src)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=48,
                        help="requests per concurrency level (at least 2 per client)")
    parser.add_argument("--photo-repeats", type=int, default=5)
    args = parser.parse_args()

    here = Path(__file__).resolve().parent.parent
    configs = {
        "before": (str(args.before / "container_src"), {}),
        "after, batching off": (str(here / "container_src"), {"DOGBREED_BATCH_SIZE": "1"}),
        "after, batching on": (str(here / "container_src"), {}),
    }
    photos = {name: jpeg(*size, seed=1) for name, size in PHOTO_SIZES.items()}
    mix = [jpeg(*size, seed=index) for index, size in enumerate(MIX)]
    results: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_random_model(base / "model")
        for round_number in range(args.rounds):
            for name, (pythonpath, env) in configs.items():
                server = Server(base, pythonpath, env)
                result = {"cold start": server.start(photos["0.2 MP"])}
                try:
                    post(requests.Session(), server.url, mix[0])
                    result["photos"] = photo_p50s(server.url, photos, args.photo_repeats)
                    for clients in CONCURRENCY:
                        per_client = max(2, args.requests // clients)
                        result[clients] = under_load(server.url, mix, clients, per_client)
                    result["memory"] = tree_rss_mb(server.process.pid)
                finally:
                    server.stop()
                results[name].append(result)
                print(f"round {round_number + 1}, {name}: cold start "
                      f"{result['cold start']:.1f} s, " + ", ".join(
                          f"c{c} {result[c][0]:.1f} req/s" for c in CONCURRENCY), flush=True)

    print(f"\n{os.cpu_count()} cores, medians over {args.rounds} round(s)")
    print("| server | photo | p50 (ms) |")
    print("|---|---|---|")
    for name, rounds in results.items():
        for photo in PHOTO_SIZES:
            values = [r["photos"][photo] for r in rounds]
            numeric = [float(v) for v in values if not v.startswith("refused")]
            shown = f"{statistics.median(numeric):.0f}" if len(numeric) == len(values) \
                else values[0]
            print(f"| {name} | {photo} | {shown} |")
    print("\n| server | clients | throughput (req/s) | p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|---|")
    for name, rounds in results.items():
        for clients in CONCURRENCY:
            rate, p50, p99 = (statistics.median(r[clients][i] for r in rounds) for i in range(3))
            print(f"| {name} | {clients} | {rate:.1f} | {p50:.0f} | {p99:.0f} |")
    print("\n| server | cold start (s) | memory, all processes (MB) |")
    print("|---|---|---|")
    for name, rounds in results.items():
        print(f"| {name} | {statistics.median(r['cold start'] for r in rounds):.1f} | "
              f"{statistics.median(r['memory'] for r in rounds):.0f} |")
    before, after = results["before"], results["after, batching on"]
    for clients in (1, 16):
        ratio = statistics.median(r[clients][0] for r in after) / \
            statistics.median(r[clients][0] for r in before)
        p50_ratio = statistics.median(r[clients][1] for r in after) / \
            statistics.median(r[clients][1] for r in before)
        print(f"concurrency {clients}: throughput after/before {ratio:.2f}x, "
              f"p50 after/before {p50_ratio:.2f}")


if __name__ == "__main__":
    main()
