"""System utilisation sampled in a background thread: what the profiler rules judge.

Every `interval` seconds one JSON line goes to `system.jsonl`: CPU per core, memory,
iowait, disk and network byte rates (psutil, over the interval just ended), and per GPU
its utilisation and memory in use (NVML, through NVIDIA's binding `nvidia-ml-py`, module
`pynvml`, which loads the driver's `libnvidia-ml.so.1`). Without a GPU or the driver the
`gpus` list is empty; the sampler never fails the job. Each line is flushed as it is
written, so a job that is killed keeps what was sampled.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import IO

import psutil
import pynvml


def visible_gpus(count: int) -> list[int]:
    """The GPUs this job may use: NVML sees every GPU of the machine, so an idle
    neighbour's GPU must not count. CUDA_VISIBLE_DEVICES by index (UUIDs: all GPUs)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    indexes = []
    for part in filter(None, (p.strip() for p in visible.split(","))):
        if not part.isdigit():
            return list(range(count))
        if int(part) < count:
            indexes.append(int(part))
    return indexes


class Nvml:
    """The few NVML calls the sampler needs, on an initialised NVML (`pynvml.nvmlInit`).
    `Nvml.open()` is None without a GPU driver."""

    def __init__(self):
        self.handles = [(index, pynvml.nvmlDeviceGetHandleByIndex(index))
                        for index in visible_gpus(pynvml.nvmlDeviceGetCount())]

    @classmethod
    def open(cls) -> "Nvml | None":
        try:
            pynvml.nvmlInit()  # NVMLError_LibraryNotFound without a driver
        except pynvml.NVMLError:
            return None
        try:
            return cls()
        except pynvml.NVMLError:
            _shutdown()
            return None

    def sample(self) -> list[dict]:
        gpus = []
        for index, handle in self.handles:
            try:
                rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            except pynvml.NVMLError:
                continue  # a device that stops answering is left out of this sample
            gpus.append({"index": index, "utilization_percent": float(rates.gpu),
                         "memory_percent": 100.0 * memory.used / max(memory.total, 1)})
        return gpus

    def close(self) -> None:
        _shutdown()


def _shutdown() -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass  # the sampler never fails the job


class SystemSampler:
    """`start()` begins sampling into `path`; `stop()` writes a last sample for the part
    of an interval that had passed, so the series covers start to stop."""

    def __init__(self, path: Path, interval: float):
        self.path = Path(path)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self._nvml: Nvml | None = None
        self._counters: tuple | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w")
        self._nvml = Nvml.open()
        psutil.cpu_percent(percpu=True)  # the baseline of the first interval
        psutil.cpu_times_percent()
        self._counters = self._read_counters()
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._write(self.sample())
        self._file.close()
        if self._nvml is not None:
            self._nvml.close()

    def sample(self) -> dict:
        """Utilisation since the previous sample (or since `start`)."""
        # cpu_percent and cpu_times_percent measure since their previous call.
        cpu, times = psutil.cpu_percent(percpu=True), psutil.cpu_times_percent()
        previous, self._counters = self._counters, self._read_counters()
        now, disk, net = self._counters
        seconds = max(now - previous[0], 1e-6)
        return {
            "time": now,
            "cpu_percent": cpu,
            "memory_percent": psutil.virtual_memory().percent,
            "iowait_percent": getattr(times, "iowait", 0.0),  # Linux only
            "disk_read_bytes_per_s": _rate(disk, previous[1], "read_bytes", seconds),
            "disk_write_bytes_per_s": _rate(disk, previous[1], "write_bytes", seconds),
            "net_recv_bytes_per_s": _rate(net, previous[2], "bytes_recv", seconds),
            "net_sent_bytes_per_s": _rate(net, previous[2], "bytes_sent", seconds),
            "gpus": self._nvml.sample() if self._nvml is not None else [],
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._write(self.sample())

    def _write(self, sample: dict) -> None:
        self._file.write(json.dumps(sample) + "\n")
        self._file.flush()

    @staticmethod
    def _read_counters() -> tuple:
        return time.time(), psutil.disk_io_counters(), psutil.net_io_counters()


def _rate(counters, previous, name: str, seconds: float) -> float:
    """Bytes per second; 0 where the machine exposes no counters (some containers)."""
    if counters is None or previous is None:
        return 0.0
    return max(getattr(counters, name) - getattr(previous, name), 0) / seconds
