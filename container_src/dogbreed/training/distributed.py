"""DistributedDataParallel across GPUs and hosts: when to use it, how to launch it.

SageMaker starts one container per host and runs `train` once in each. With more than one
GPU or host, that first process becomes a launcher: it runs `torchrun` with one worker per
GPU (nccl) or, on CPU, `DOGBREED_PROCS_PER_HOST` workers (gloo), host 0 as the master.
The workers run this same program and find RANK/WORLD_SIZE in their environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

MASTER_PORT_ENV = "DOGBREED_MASTER_PORT"
PROCS_PER_HOST_ENV = "DOGBREED_PROCS_PER_HOST"
DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class LaunchPlan:
    nodes: int
    procs_per_node: int
    node_rank: int
    master_addr: str
    master_port: int
    threads_per_proc: int
    network_interface: str | None = None  # resourceconfig.json's network_interface_name

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    # Stop flags, metric sums and objects travel on a CPU (gloo) group: a per-step check on
    # the nccl group would sync the GPU every step.
    control_group: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_torchrun_worker() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_plan(hosts: list[str], current_host: str, num_gpus: int, num_cpus: int,
                network_interface: str | None = None) -> LaunchPlan:
    """How many workers where; a world of one needs no torchrun at all."""
    procs = num_gpus if num_gpus > 0 else int(os.environ.get(PROCS_PER_HOST_ENV, "1"))
    if procs < 1:
        raise ValueError(f"{PROCS_PER_HOST_ENV} must be >= 1, got {procs}")
    return LaunchPlan(
        nodes=len(hosts),
        procs_per_node=procs,
        node_rank=hosts.index(current_host),
        # One host: loopback, so a container's own hostname never has to resolve.
        master_addr=hosts[0] if len(hosts) > 1 else "127.0.0.1",
        master_port=int(os.environ.get(MASTER_PORT_ENV, DEFAULT_MASTER_PORT)),
        threads_per_proc=max(1, num_cpus // procs),
        network_interface=network_interface,
    )


def socket_interface_env(interface: str | None,
                         interfaces_dir: Path = Path("/sys/class/net")) -> dict[str, str]:
    """NCCL and gloo bind to the interface SageMaker names (as its own training toolkit
    does): left to guess, they may pick one the other hosts cannot reach. Only when this
    host has it (the process backend's config names eth0 on any machine)."""
    if not interface or not (interfaces_dir / interface).exists():
        return {}
    return {"NCCL_SOCKET_IFNAME": interface, "GLOO_SOCKET_IFNAME": interface}


WORKER_SHUTDOWN_SECONDS = 110


def run_torchrun(plan: LaunchPlan, module: str) -> tuple[int, bool]:
    """Run `python -m module` under torchrun; SIGTERM is passed on so workers checkpoint.

    Returns torchrun's exit code and whether a SIGTERM was passed on (torchrun itself
    exits 1 then, which must not read as a failure of the training).
    """
    command = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={plan.nodes}", f"--nproc_per_node={plan.procs_per_node}",
        f"--node_rank={plan.node_rank}", f"--master_addr={plan.master_addr}",
        f"--master_port={plan.master_port}",
        # After passing on a SIGTERM torchrun SIGKILLs the workers still running after
        # this long (30 s by default): too short for a checkpoint of a big job on a busy
        # host. SageMaker allows 120 s between SIGTERM and SIGKILL (StopTrainingJob, spot).
        f"--shutdown_timeout={WORKER_SHUTDOWN_SECONDS}", "-m", module,
    ]
    # torchrun would set OMP_NUM_THREADS=1, which starves CPU workers.
    env = dict(socket_interface_env(plan.network_interface), **os.environ,
               OMP_NUM_THREADS=str(plan.threads_per_proc))
    print(f"launching {plan.world_size} DDP workers ({plan.nodes} host(s) x "
          f"{plan.procs_per_node}): {' '.join(command[1:])}", flush=True)
    process = subprocess.Popen(command, env=env)
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signum)
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait(), bool(forwarded)
    finally:
        signal.signal(signal.SIGTERM, previous)


def init_worker() -> DistContext:
    """Join the process group (under torchrun) or run alone; pick this worker's device."""
    if not is_torchrun_worker():
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return DistContext(0, 0, 1, device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    control = dist.new_group(backend="gloo") if backend == "nccl" else None
    return DistContext(dist.get_rank(), local_rank, dist.get_world_size(), device, control)


def all_reduce_sum(values: list[float], context: DistContext) -> list[float]:
    """Sum plain numbers over all ranks (metrics, stop flags), without touching the GPU."""
    if not context.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, group=context.control_group)
    return tensor.tolist()


def all_reduce_tensor_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum a tensor over all ranks, on its device (NCCL for GPU tensors, gloo on CPUs)."""
    if context.enabled:
        dist.all_reduce(tensor)
    return tensor


class StepVote:
    """Per-step flags (stop requested?) summed over all ranks without waiting for them:
    each step starts a non-blocking all-reduce on the CPU group and reads the one started
    the step before, which has long finished. Every rank decides on the same step, one
    step after a flag was raised; a blocking all-reduce per step made every rank wait for
    the slowest, every step. Alone, the flags come back at once."""

    def __init__(self, context: DistContext):
        self.context = context
        self._pending: tuple | None = None

    def __call__(self, flags: list[float]) -> list[float] | None:
        """Last step's sums (None on the first step of a vote)."""
        if not self.context.enabled:
            return flags
        previous = self.drain()
        tensor = torch.tensor(flags, dtype=torch.float64)
        work = dist.all_reduce(tensor, group=self.context.control_group, async_op=True)
        self._pending = (work, tensor)
        return previous

    def drain(self) -> list[float] | None:
        """Wait for the vote in flight (before the next blocking collective on the group)."""
        if self._pending is None:
            return None
        work, tensor = self._pending
        self._pending = None
        work.wait()
        return tensor.tolist()


def broadcast_from_main(obj, context: DistContext):
    """Rank 0's object on every rank (a resumed checkpoint, so all ranks start equal)."""
    if not context.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=context.control_group)
    return box[0]


def gather_objects(obj, context: DistContext) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not context.enabled:
        return [obj]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, obj, group=context.control_group)
    return gathered


def sync_buffers(model: torch.nn.Module, context: DistContext) -> None:
    """Rank 0's BatchNorm statistics on every rank: each rank updated its own copy with
    its own batches since DDP last synced them, and evaluation is sharded."""
    if not context.enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def broadcast_state_from_main(module: torch.nn.Module, context: DistContext) -> None:
    """Rank 0's parameters and buffers on every rank (what DDP's wrapper does at its start,
    for a module that no wrapper holds)."""
    if not context.enabled:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
