"""How should a CPU serving worker run ResNet50? Threads per process, batch size and memory
format, side by side in one process: milliseconds per image of the forward pass alone
(224 px, 133-way head, inference mode), median of `--repeats` after one warm-up pass.

    .venv/bin/python benchmarks/forward_threads.py [--repeats 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models import resnet50

BATCHES = (1, 2, 4, 8, 16)


def ms_per_image(model: torch.nn.Module, threads: int, batch: int, channels_last: bool,
                 repeats: int) -> float:
    torch.set_num_threads(threads)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    images = torch.randn(batch, 3, 224, 224).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        model(images)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(images)
            times.append((time.perf_counter() - started) / batch * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--max-threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    model = resnet50(num_classes=133).eval()
    threads = sorted({1, args.max_threads})
    print("| threads, format | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---|" + "---|" * len(BATCHES))
    for count in threads:
        for channels_last in (False, True):
            row = [ms_per_image(model, count, batch, channels_last, args.repeats)
                   for batch in BATCHES]
            name = f"{count}, {'channels_last' if channels_last else 'contiguous'}"
            print(f"| {name} | " + " | ".join(f"{value:.1f}" for value in row) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
