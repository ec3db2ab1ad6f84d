"""Does `launcher transform` keep the server as busy as concurrent clients do? One server
(the serving program in batch-transform mode, its default workers and batching), measured
in alternating rounds at the concurrency its /execution-parameters ask for:
  - clients: `serve_concurrency.py`'s load (clients sending back to back);
  - transform: `launcher.transform.run_transform` over a folder of the same photos (reading
    files, checking each, writing each answer and the CSV).
The model is a 224 px ResNet50 with random weights and a 133-way head.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/transform_throughput.py [--images 96]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import requests

from launcher import endpoints
from launcher.predict import http_invoker
from launcher.transform import plan_transform, run_transform
from serve_concurrency import MIX, jpeg, under_load
from serve_latency import write_random_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_random_model(base / "model")
        photos = base / "photos"
        photos.mkdir()
        mix = [jpeg(*size, seed=index) for index, size in enumerate(MIX)]
        for index in range(args.images):
            (photos / f"{index:04d}.jpg").write_bytes(mix[index % len(mix)])
        port = endpoints.free_port()
        url = f"http://127.0.0.1:{port}"
        server = endpoints.start_serve_process(base / "model", base / "server", port, None,
                                               {"SAGEMAKER_BATCH": "true"})
        try:
            endpoints.wait_until_ready(server, url, base / "server" / "serve.log")
            concurrency = requests.get(f"{url}/execution-parameters",
                                       timeout=10).json()["MaxConcurrentTransforms"]
            invocations = f"{url}/invocations"
            under_load(invocations, mix, concurrency, 2)  # warm
            clients, transforms = [], []
            for _ in range(args.rounds):
                rate, _, _ = under_load(invocations, mix, concurrency,
                                        args.images // concurrency)
                clients.append(rate)
                output = base / "out"
                shutil.rmtree(output, ignore_errors=True)
                plan = plan_transform(photos, output, {"model": "random", "top_k": 5})
                started = time.perf_counter()
                result = run_transform(plan, http_invoker(url), 5, concurrency)
                transforms.append(len(plan.files) / (time.perf_counter() - started))
                assert not result.failed, result.failed
        finally:
            endpoints.stop_process(server.pid)
    client_rate, transform_rate = statistics.median(clients), statistics.median(transforms)
    print(f"concurrency {concurrency} (the server's MaxConcurrentTransforms), {args.images} "
          f"photos, medians of {args.rounds} alternating rounds")
    print(f"clients:   {client_rate:.1f} img/s  (rounds: "
          f"{', '.join(f'{r:.1f}' for r in clients)})")
    print(f"transform: {transform_rate:.1f} img/s  (rounds: "
          f"{', '.join(f'{r:.1f}' for r in transforms)})")
    print(f"transform / clients: {transform_rate / client_rate:.2f}")


if __name__ == "__main__":
    main()
