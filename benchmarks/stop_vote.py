"""The per-step cost of agreeing on a stop under DDP: a blocking gloo all-reduce every step
(before) against `StepVote`, a non-blocking one read a step later (after).

Two gloo ranks on this machine run STEPS steps of a fixed amount of work each (a matmul
loop; rank 1's steps are JITTER longer every other step, as real ranks drift), in three
ways side by side, in rounds: no vote at all, a blocking vote, StepVote. The figure is the
median per-step time over rounds and its excess over no vote.

    .venv/bin/python benchmarks/stop_vote.py [--steps 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container_src"))
from dogbreed.training.distributed import DistContext, StepVote, all_reduce_sum  # noqa: E402

WORK = 6  # matmuls of 256 x 256 per step (a few ms on one core)
JITTER = 0.002  # seconds rank 1 adds to every other step


def step_work(rank: int, step: int, a: torch.Tensor) -> None:
    for _ in range(WORK):
        a = a @ a
        a = a / a.norm()
    if rank == 1 and step % 2:
        time.sleep(JITTER)


def run(rank: int, world: int, port: int, steps: int, rounds: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    context = DistContext(rank, rank, world, torch.device("cpu"), dist.new_group(backend="gloo"))
    a = torch.rand(256, 256)
    results = {"none": [], "blocking": [], "StepVote": []}
    for _ in range(rounds):
        for kind in results:
            vote = StepVote(context)
            dist.barrier()
            started = time.perf_counter()
            for step in range(steps):
                step_work(rank, step, a)
                if kind == "blocking":
                    all_reduce_sum([0.0, 0.0], context)
                elif kind == "StepVote":
                    vote([0.0, 0.0])
            vote.drain()
            dist.barrier()
            results[kind].append((time.perf_counter() - started) / steps * 1000)
    if rank == 0:
        out.put(results)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(run, args=(2, port, args.steps, args.rounds, queue), nprocs=2)
    results = queue.get()
    base = statistics.median(results["none"])
    print(f"2 gloo ranks, {args.steps} steps x {args.rounds} rounds, medians of per-step ms:")
    for kind, times in results.items():
        median = statistics.median(times)
        print(f"  {kind:9s} {median:7.3f} ms/step   excess over no vote {median - base:+.3f} ms "
              f"({(median / base - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
