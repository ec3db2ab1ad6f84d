"""channels_last against the default layout on the CPU: ResNet50 inference (the feature
cache's one pass, serving) and a training step, side by side in one run.

Each round times one batch in each layout, alternating; prints the medians (images/s) and
the ratio channels_last / default, and the largest difference of the logits.

    .venv/bin/python benchmarks/channels_last_cpu.py [--image-size 112] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision


def timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = torchvision.models.resnet50(num_classes=10)
    layouts = {"default": torch.contiguous_format, "channels_last": torch.channels_last}
    models, inputs, optimizers = {}, {}, {}
    batch = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 10, (args.batch_size,))
    for name, layout in layouts.items():
        model = torchvision.models.resnet50(num_classes=10)
        model.load_state_dict(base.state_dict())
        models[name] = model.to(memory_format=layout)
        inputs[name] = batch.contiguous(memory_format=layout)
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def infer(name):
        models[name].eval()
        with torch.no_grad():
            models[name](inputs[name])

    def train(name):
        models[name].train()
        loss = torch.nn.functional.cross_entropy(models[name](inputs[name]), labels)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    with torch.no_grad():
        difference = (models["default"].eval()(inputs["default"])
                      - models["channels_last"].eval()(inputs["channels_last"])).abs().max()
    print(f"{args.image_size} px, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"largest logit difference {difference.item():.2e}")
    for work, step in (("inference", infer), ("training step", train)):
        seconds = {name: [] for name in layouts}
        for _ in range(args.rounds + 1):  # the first round warms up
            for name in layouts:
                seconds[name].append(timed(lambda: step(name)))
        rates = {name: args.batch_size / statistics.median(times[1:])
                 for name, times in seconds.items()}
        print(f"{work}: default {rates['default']:.1f} img/s, channels_last "
              f"{rates['channels_last']:.1f} img/s, ratio "
              f"{rates['channels_last'] / rates['default']:.2f}", flush=True)


if __name__ == "__main__":
    main()
