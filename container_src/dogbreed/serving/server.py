"""The serving program: `python -m dogbreed.serve`, the serving image's `serve`.

1. Loads the model once in a child process; a model that cannot load ends `serve` at once
   with exit code 1 and the reason (SageMaker shows the log; nothing half-starts).
2. Starts multi-model-server (Java) with the sagemaker-inference handler service on a
   loopback port, its config and logs in a writable runtime folder (not /etc, so it runs
   as a non-root user too), and registers the model through MMS's management API: only
   there does MMS take a batch size and a batch delay (a model in `load_models` always
   gets batch size 1). A worker takes up to the batch size of the requests waiting, waiting
   at most the delay for more once it holds one.
3. Answers on `SAGEMAKER_BIND_TO_PORT` through a small front that forwards everything to
   MMS except `GET /ping`: MMS answers 200 there from its first second, before any worker
   has loaded the model and even when loading failed (measured: see README), so the
   front answers 200 only while MMS reports a READY worker (single-model) or MMS is up
   (multi-model). It also turns MMS's own error bodies into `{"error": ...}`.
4. Multi-model: the front answers SageMaker's LoadModel (`POST /models`) itself. MMS says
   200 for a model whose `model_fn` failed (its worker swallows the exception), so the front
   registers the model, sends it a probe prediction, and answers 200 only when that came
   back; otherwise it unregisters the model and answers the worker's reason. It loads only
   folders inside the model store, and an unload answers once the workers' memory is free.

Settings (environment): SAGEMAKER_BIND_TO_PORT (8080), SAGEMAKER_MODEL_SERVER_WORKERS
(one per GPU, else one per 4 CPUs, 1 to 4), DOGBREED_BATCH_SIZE (requests per forward
pass: 32 on a GPU, 4 on CPUs; 1 turns batching off), DOGBREED_MAX_BATCH_DELAY_MS (5),
DOGBREED_PRECISION (auto: bf16 on GPUs that support it; fp32, bf16), DOGBREED_TOP_K
(breeds per answer when a request names none: 5; a transform job's way to ask), SAGEMAKER_BATCH
(true in a transform job: `GET /execution-parameters` answers), SAGEMAKER_BATCH_STRATEGY,
SAGEMAKER_MAX_CONCURRENT_TRANSFORMS (a transform job's; the default batch size stays
within it),
SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS (60),
SAGEMAKER_MAX_PAYLOAD_IN_MB (6), SAGEMAKER_MULTI_MODEL (false), SAGEMAKER_STARTUP_TIMEOUT
(600 s; also the limit for one model load), SAGEMAKER_CONTAINER_LOG_LEVEL (20, INFO),
DOGBREED_MAX_IMAGE_PIXELS, DOGBREED_MAX_INSTANCES, DOGBREED_SERVE_DIR (runtime folder; a
fresh temporary one by default).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http import HTTPStatus
from http import client as http_client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import psutil
from PIL import Image

from dogbreed.serving.codec import (MAX_PAYLOAD_MB, MAX_TOP_K, TOP_K_ENV, encode_error,
                                    max_payload_mb_from_environment)
from dogbreed.serving.log_level import log_level_from_environment

HANDLER_SERVICE = "dogbreed.serving.handler_service"
SINGLE_MODEL_NAME = "model"
SINGLE_MODEL_INVOKE = f"/models/{SINGLE_MODEL_NAME}/invoke"
READY_CACHE_SECONDS = 1.0
# Letters, digits, '.', '_', '-': the name goes into MMS's URL paths as it is.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
UNLOAD_WAIT_SECONDS = 30
# Measured on the 2-core machine (benchmarks/README.md, "Serving under concurrency").
CPU_BATCH_SIZE = 4
GPU_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_DELAY_MS = 5
MAX_BATCH_SIZE = 256
MAX_BATCH_DELAY_MS = 10_000
CPUS_PER_WORKER = 4
MAX_CPU_WORKERS = 4
PRECISIONS = ("auto", "fp32", "bf16")  # dogbreed.serving.predictor's; no torch here
# One image file per request either way: with SplitType None a transform job sends each
# file whole, and MultiRecord only packs the records a split makes.
BATCH_STRATEGIES = ("SINGLE_RECORD", "MULTI_RECORD")
MAX_CONCURRENT_TRANSFORMS = 10_000
# Request headers that belong to one hop, not to the request (RFC 9110, 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}


logger = logging.getLogger("dogbreed.serve")


class ServeError(RuntimeError):
    """serve cannot start; the message says why."""


class LoadRefused(Exception):
    """A load request refused before anything reached MMS: its status and reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServeSettings:
    port: int
    workers: int
    timeout_seconds: int
    max_payload_bytes: int
    multi_model: bool
    startup_timeout: int
    model_dir: Path
    runtime_dir: Path
    runtime_dir_is_temporary: bool = False
    gpus: int = 0  # that torch can use: MMS gives each worker one (gpu_id), round robin
    batch_size: int = 0  # 0: chosen from the device once the GPUs are counted
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS
    batch_transform: bool = False  # SAGEMAKER_BATCH: a transform job runs this container
    batch_strategy: str = "SINGLE_RECORD"
    max_concurrent_transforms: int = 0  # 0: the job set none; /execution-parameters says

    def execution_parameters(self) -> dict:
        """What suits a transform job (SageMaker asks when the job set none): as many
        requests in flight as the workers batch together, one image file per request,
        within CreateTransformJob's MaxConcurrentTransforms x MaxPayloadInMB <= 100."""
        payload_mb = math.ceil(self.max_payload_bytes / 2**20)
        return {"MaxConcurrentTransforms": self.max_concurrent_transforms or
                max(1, min(self.workers * self.batch_size, MAX_PAYLOAD_MB // payload_mb)),
                "BatchStrategy": self.batch_strategy,
                "MaxPayloadInMB": payload_mb}

    @classmethod
    def from_environment(cls) -> "ServeSettings":
        base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        multi_model = os.environ.get("SAGEMAKER_MULTI_MODEL", "false").lower() == "true"
        batching = {  # checked first: a bad value must not leave a temporary folder behind
            "batch_size": _whole_number("DOGBREED_BATCH_SIZE", 0, 1, MAX_BATCH_SIZE,
                                        "requests per forward pass; 1 turns batching off"),
            "max_batch_delay_ms": _whole_number(
                "DOGBREED_MAX_BATCH_DELAY_MS", DEFAULT_MAX_BATCH_DELAY_MS, 0,
                MAX_BATCH_DELAY_MS, "milliseconds a worker waits to fill a batch"),
        }
        _whole_number(TOP_K_ENV, 0, 1, MAX_TOP_K, "breeds per answer when a request asks "
                      "for none")  # read by the workers; a bad one stops serve here
        precision = os.environ.get("DOGBREED_PRECISION") or "auto"
        if precision not in PRECISIONS:
            raise ServeError(f"bad serving setting: DOGBREED_PRECISION={precision!r}: use "
                             f"{', '.join(PRECISIONS)}")
        transform = _batch_transform_settings()
        try:
            payload_bytes = int(max_payload_mb_from_environment() * 2**20)
        except ValueError as error:
            raise ServeError(f"bad serving setting: {error}") from None
        runtime = os.environ.get("DOGBREED_SERVE_DIR")
        temporary = not runtime
        runtime = runtime or tempfile.mkdtemp(prefix="dogbreed-serve-")
        try:
            return cls(
                port=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")),
                workers=int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS") or 0),
                timeout_seconds=int(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", "60")),
                max_payload_bytes=payload_bytes,
                multi_model=multi_model,
                startup_timeout=int(os.environ.get("SAGEMAKER_STARTUP_TIMEOUT", "600")),
                model_dir=base / ("models" if multi_model else "model"),
                runtime_dir=Path(runtime),
                runtime_dir_is_temporary=temporary,
                **batching,
                **transform,
            )
        except ValueError as error:
            raise ServeError(f"bad serving setting: {error}") from None


def _batch_transform_settings() -> dict:
    """SageMaker's settings for a transform job's container (set only in one)."""
    flag = os.environ.get("SAGEMAKER_BATCH", "false").strip().lower()
    if flag not in ("true", "false"):
        raise ServeError(f"bad serving setting: SAGEMAKER_BATCH={flag!r}: true or false")
    strategy = os.environ.get("SAGEMAKER_BATCH_STRATEGY", "").strip() or "SINGLE_RECORD"
    if strategy not in BATCH_STRATEGIES:
        raise ServeError(f"bad serving setting: SAGEMAKER_BATCH_STRATEGY={strategy!r}: "
                         f"{' or '.join(BATCH_STRATEGIES)}")
    return {"batch_transform": flag == "true", "batch_strategy": strategy,
            "max_concurrent_transforms": _whole_number(
                "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", 0, 0, MAX_CONCURRENT_TRANSFORMS,
                "requests a transform job sends at once")}


def _whole_number(name: str, default: int, minimum: int, maximum: int, meaning: str) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not minimum <= int(value) <= maximum:
        raise ServeError(f"bad serving setting: {name}={value!r}: a whole number from "
                         f"{minimum} to {maximum} ({meaning})")
    return int(value)


def default_workers(gpus: int) -> int:
    """One per GPU; on CPUs one per 4 cores, 1 to 4 (each holds ~0.5 GB). On 2 cores one
    2-thread worker batching 4 requests computes 26-34 ms per image, two 1-thread workers
    together ~45-50 (benchmarks/README.md): torch's threads scale well up to a few cores,
    and a batch uses them better than two processes."""
    if gpus > 0:
        return gpus
    return max(1, min((os.cpu_count() or 1) // CPUS_PER_WORKER, MAX_CPU_WORKERS))


def default_batch_size(gpus: int) -> int:
    return GPU_BATCH_SIZE if gpus > 0 else CPU_BATCH_SIZE


def check_model(model_dir: Path) -> dict:
    """Load the model once, in a child process, before anything starts: a broken artifact
    must stop serve with its reason, not send MMS workers into a retry loop. (A child, so
    this long-lived process never holds torch or a copy of the weights.)"""
    result = subprocess.run([sys.executable, "-m", "dogbreed.serving.predictor", str(model_dir)],
                            capture_output=True, text=True)
    try:
        summary = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ServeError(f"cannot serve the model in {model_dir}: the check crashed: "
                         f"{result.stderr.strip()[-800:]}") from None
    if result.returncode != 0 and summary.get("gpu_unusable"):
        raise ServeError(summary["error"])
    if result.returncode != 0:
        raise ServeError(f"cannot serve the model in {model_dir}: {summary['error']}")
    return summary


def gpu_count() -> int:
    """GPUs torch can use (a child process: this one never imports torch); a host whose
    GPUs torch cannot use is an error, not a CPU endpoint billed at GPU prices."""
    result = subprocess.run([sys.executable, "-m", "dogbreed.gpu_check", "usable"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ServeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip()
                         else f"the GPU check failed (exit {result.returncode})")
    return int(result.stdout.strip())


def write_mms_config(settings: ServeSettings, internal_port: int) -> Path:
    settings.runtime_dir.mkdir(parents=True, exist_ok=True)
    address = f"http://127.0.0.1:{internal_port}"
    properties = {
        "inference_address": address,
        "management_address": address,  # SageMaker's MME calls /models on the same port
        "model_store": "/",  # models are registered through the management API only
        "default_service_handler": HANDLER_SERVICE,
        "default_workers_per_model": settings.workers,
        # MMS would count GPUs with nvidia-smi itself; torch's count is the one that holds
        # (CUDA_VISIBLE_DEVICES), and 0 on a CPU host means no worker is given a gpu_id.
        "number_of_gpu": settings.gpus,
        "default_response_timeout_seconds": settings.timeout_seconds,
        # MMS refuses bodies over this before they reach Python; a little over our limit,
        # so the handler's 413 with its message is what clients normally see.
        "max_request_size": settings.max_payload_bytes + 65536,
        "decode_input_request": "false",
        # JDK 17 respects container CPU/memory limits unless told not to (the toolkit's
        # default does tell it not to); the frontend needs little heap.
        "vmargs": "-XX:+UseContainerSupport -XX:MaxRAMPercentage=25 -XX:+UseSerialGC",
        "enable_envvars_config": "false",
    }
    path = settings.runtime_dir / "mms.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()
                            if value != ""))
    return path


class ModelServer:
    """The MMS Java process (and its Python workers) in a process group of its own."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.port = _free_loopback_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        config = write_mms_config(self.settings, self.port)
        from sagemaker_inference import model_server  # only for its log4j2 file

        # The console script's shebang may point where this user cannot read; run MMS's
        # entry point with this interpreter instead.
        command = [sys.executable, "-c", "from mms.model_server import start; start()", "--start",
                   "--foreground", "--mms-config", str(config), "--model-store", "/",
                   "--log-config", model_server.DEFAULT_MMS_LOG_FILE]
        # MMS starts its Python workers with the `python` on PATH: make it this one.
        bin_dir = str(Path(sys.executable).parent)
        env = dict(os.environ, LOG_LOCATION=str(self.settings.runtime_dir / "logs"),
                   METRICS_LOCATION=str(self.settings.runtime_dir / "logs"),
                   PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                   # the handler splits the cores between this many workers
                   SAGEMAKER_MODEL_SERVER_WORKERS=str(self.settings.workers),
                   # MMS keeps a pid file in the temp dir and refuses to start beside
                   # another server: give each server its own.
                   TMPDIR=str(self.settings.runtime_dir / "tmp"))
        (self.settings.runtime_dir / "tmp").mkdir(exist_ok=True)
        # A pid file left by an earlier run in the same folder makes MMS refuse to start
        # whenever that pid is alive again (likely in a container).
        (self.settings.runtime_dir / "tmp" / ".model_server.pid").unlink(missing_ok=True)
        self.process = subprocess.Popen(command, cwd=self.settings.runtime_dir, env=env,
                                        start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_seconds: float = 20) -> None:
        """SIGTERM to the whole group (launcher, JVM, workers), and wait until every one of
        them is gone: the JVM outlives its launcher by a while."""
        if self.process is None:
            return
        group = self.process.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self._wait_for_group(group, grace_seconds):
            return
        os.killpg(group, signal.SIGKILL)
        self._wait_for_group(group, 5)

    def _wait_for_group(self, group: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.process.poll()  # reap our own child, or the group never looks empty
            if os.getpid() == 1:  # PID 1 (no tini) inherits the orphaned JVM: reap it too
                try:
                    while os.waitpid(-1, os.WNOHANG)[0] > 0:
                        pass
                except ChildProcessError:
                    pass
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float | None = None):
        """One request to MMS: (status, headers, body)."""
        connection = http_client.HTTPConnection("127.0.0.1", self.port,
                                                timeout=timeout or self.settings.timeout_seconds + 5)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def register(self, name: str, folder: Path) -> tuple[int, bytes]:
        """Register a model with this server's workers and batching, waiting until its
        workers are up. Only the name and a checked folder come from outside: workers,
        handler and batching are the server's to choose, not the caller's."""
        settings = self.settings
        registration = {"model_name": name, "url": str(folder), "synchronous": True,
                        "initial_workers": settings.workers, "batch_size": settings.batch_size,
                        "max_batch_delay": settings.max_batch_delay_ms}
        status, _, data = self.request(
            "POST", "/models", json.dumps(registration).encode(),
            {"Content-Type": "application/json"}, timeout=settings.startup_timeout)
        return status, data

    def ready(self) -> bool:
        """Can a request be answered now? Single model: a READY worker; MME: MMS is up."""
        if not self.alive():
            return False
        try:
            if self.settings.multi_model:
                return self.request("GET", "/ping", timeout=2)[0] == 200
            status, _, body = self.request("GET", f"/models/{SINGLE_MODEL_NAME}", timeout=2)
        except OSError:
            return False
        if status != 200:
            return False
        try:
            described = json.loads(body)
        except ValueError:
            return False
        models = described if isinstance(described, list) else [described]
        return any(worker.get("status") == "READY"
                   for model in models for worker in model.get("workers", []))

    def worker_processes(self, model_name: str) -> list[psutil.Process]:
        """The processes of one model's workers (MMS's listener and the fork that holds the
        model), found by the socket port in MMS's worker ids ("9000-8d99b09f"): an unload
        frees memory only once they are gone, which MMS does not wait for."""
        try:
            status, _, body = self.request("GET", f"/models/{model_name}", timeout=10)
            described = json.loads(body) if status == 200 else []
        except (OSError, http_client.HTTPException, ValueError):
            return []
        models = described if isinstance(described, list) else [described]
        sockets = tuple(f".mms.sock.{str(worker.get('id', '')).split('-')[0]}"
                        for model in models for worker in model.get("workers", []))
        return [process for process in _descendants(self.process.pid)
                if _has_argument_ending(process, sockets)]


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _has_argument_ending(process: psutil.Process, endings: tuple[str, ...]) -> bool:
    try:
        return bool(endings) and any(arg.endswith(endings) for arg in process.cmdline())
    except psutil.Error:
        return False


def _wait_until_exited(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those still running after `seconds`. An exited process that its new parent has not
    reaped yet (a zombie, measured up to ~2 s here) holds no memory: it counts as exited."""
    deadline = time.monotonic() + seconds
    running = processes
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = [process for process in running if _running(process)]
    return running


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class NamedLocks:
    """One lock per model name, dropped when nobody holds or waits for it (SageMaker may
    load thousands of names over an endpoint's life)."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}  # name -> [lock, holders and waiters]

    @contextmanager
    def hold(self, name: str):
        with self._guard:
            entry = self._locks.setdefault(name, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[name]


class ModelLoads:
    """SageMaker's LoadModel and UnloadModel on MMS's management API, made honest: a load
    answers 200 only after a prediction came back from the model, and leaves nothing
    registered when it fails. Loads and unloads of one name take turns, so a second load
    of a name waits for the first and then gets 409 (or loads, if the first failed)."""

    def __init__(self, backend: ModelServer):
        self.backend = backend
        self.store = backend.settings.model_dir.resolve()
        self._locks = NamedLocks()

    def load(self, query: str, body: bytes) -> tuple[int, bytes]:
        try:
            name, url = parse_load_request(query, body)
            folder = model_folder_in_store(url, self.store)
        except LoadRefused as refused:
            return refused.status, encode_error(refused.message).encode()
        with self._locks.hold(name):
            return self._load(name, folder)

    def unload(self, name: str) -> tuple[int, bytes]:
        with self._locks.hold(name):
            status, data = self._unregister(name)
        return status, (_as_error_body(data) if status >= 400 else data)

    def _load(self, name: str, folder: Path) -> tuple[int, bytes]:
        started = time.monotonic()
        try:
            status, data = self.backend.register(name, folder)
        except (OSError, http_client.HTTPException) as error:
            self._unregister(name)  # MMS may still be loading it
            return self._refuse(name, 503, f"model server unavailable: {error}")
        if status == 409:  # already loaded: leave it alone
            return status, _as_error_body(data)
        if status != 200:  # e.g. a worker that died while loading
            self._unregister(name)
            return self._refuse(name, status,
                                f"{_error_message(data)}; see the endpoint's log")
        probe_status, reason = self._probe(name)
        if probe_status != 200:
            self._unregister(name)
            return self._refuse(name, 507 if probe_status == 507 else 500, reason)
        logger.info("model %r loaded from %s in %.1f s", name, folder,
                    time.monotonic() - started)
        return 200, data

    def _probe(self, name: str) -> tuple[int, str]:
        """One prediction, as /ping requires of the single model: MMS calls a model loaded
        even when its model_fn failed; the worker's answer then carries the reason."""
        try:
            status, _, data = self.backend.request(
                "POST", f"/models/{name}/invoke", _probe_image(), {"Content-Type": "image/jpeg"})
        except (OSError, http_client.HTTPException) as error:
            return 503, f"model server unavailable: {error}"
        return status, ("" if status == 200 else _error_message(data))

    def _unregister(self, name: str) -> tuple[int, bytes]:
        """DELETE on MMS, then wait until the model's worker processes have exited."""
        workers = self.backend.worker_processes(name)
        try:
            status, _, data = self.backend.request("DELETE", f"/models/{name}")
        except (OSError, http_client.HTTPException) as error:
            return 503, encode_error(f"model server unavailable: {error}").encode()
        if status == 200:
            alive = _wait_until_exited(workers, UNLOAD_WAIT_SECONDS)
            if alive:
                logger.warning("model %r unloaded, but %d worker process(es) still run after "
                               "%d s", name, len(alive), UNLOAD_WAIT_SECONDS)
        return status, data

    @staticmethod
    def _refuse(name: str, status: int, reason: str) -> tuple[int, bytes]:
        message = f"cannot load model {name!r}: {reason}"
        logger.warning("%s", message)
        return status, encode_error(message).encode()


def parse_load_request(query: str, body: bytes) -> tuple[str, str]:
    """model_name and url from SageMaker's JSON body (or MMS's query string, when the body
    is empty). Other fields are not read."""
    if body.strip():
        try:
            fields = json.loads(body)
        except (ValueError, RecursionError):
            fields = None
        if not isinstance(fields, dict):
            raise LoadRefused(400, 'the body must be JSON {"model_name": ..., "url": ...}')
    else:
        fields = {key: values[0] for key, values in parse_qs(query).items()}
    name, url = fields.get("model_name"), fields.get("url")
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise LoadRefused(400, "model_name must be 1-255 letters, digits, '.', '_' or '-', "
                               "starting with a letter or digit")
    if not isinstance(url, str) or not url:
        raise LoadRefused(400, "url must name the model's folder in the model store")
    return name, url


def model_folder_in_store(url: str, store: Path) -> Path:
    """The folder `url` names, symlinks resolved, if it lies inside the multi-model store
    (where SageMaker puts what it downloads). The management routes answer on the public
    port; without this check a caller could make the server read any folder on the host
    (a failed load lists the folder's files), or have MMS fetch an http URL or run the
    handler code inside a .mar archive."""
    refused = LoadRefused(400, f"url {url!r} is not a folder inside the model store {store}")
    if not Path(url).is_absolute():
        raise refused
    try:
        folder = Path(url).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        raise refused from None
    if folder == store or not folder.is_relative_to(store):
        raise refused
    if not folder.is_dir():
        raise LoadRefused(400, f"model folder {url} does not exist")
    return folder


class Front(ThreadingHTTPServer):
    """Public port: /ping from readiness, the rest forwarded to MMS."""
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's listen backlog is 5: 64 clients connecting at once had connections
    # reset (measured, benchmarks/serve_concurrency.py). The kernel caps it at somaxconn.
    request_queue_size = 1024

    def __init__(self, port: int, backend: ModelServer):
        self.backend = backend
        self._ready_at = 0.0
        self._ready = False
        self._lock = threading.Lock()
        # MMS calls a worker READY when its load job is queued, before model_fn has run:
        # a real prediction must have come back once before /ping may say 200.
        self.answered_once = threading.Event()
        if backend.settings.multi_model:
            self.answered_once.set()
        self.models = ModelLoads(backend) if backend.settings.multi_model else None
        super().__init__(("0.0.0.0", port), FrontHandler)

    def handle_error(self, request, client_address):
        """A client that hangs up mid-request is routine under load: one debug line instead
        of socketserver's traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.debug("client %s dropped the connection: %s", client_address[0], error)
            return
        super().handle_error(request, client_address)

    def ready(self) -> bool:
        if not self.answered_once.is_set():
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._ready_at > READY_CACHE_SECONDS:
                self._ready, self._ready_at = self.backend.ready(), now
            return self._ready


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK
    # stalls the body ~40 ms (measured: +45 ms per request before this line).
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection gives its thread back
    server: Front

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET

    def _handle(self):
        body = self._read_body()
        if body is None:
            return
        path = self.path.split("?")[0]
        settings = self.server.backend.settings
        if self.command == "GET" and path == "/ping":
            ready = self.server.ready()
            return self._answer(200 if ready else 503, json.dumps(
                {"status": "Healthy" if ready else "not ready"}).encode())
        if self.command == "GET" and path == "/execution-parameters" and \
                settings.batch_transform:
            return self._answer(200, json.dumps(settings.execution_parameters()).encode())
        if not _allowed(self.command, path, settings.multi_model):
            return self._error(404, f"no endpoint {self.command} {path}")
        if self.server.models is not None and _is_load_or_unload(self.command, path):
            return self._manage_model(path, self.path.partition("?")[2], body)
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() not in HOP_BY_HOP}
        try:
            status, response_headers, data = self.server.backend.request(
                self.command, _backend_path(self.path), body, headers)
        except (OSError, http_client.HTTPException) as error:
            return self._error(503, f"model server unavailable: {error}")
        content_type = dict((k.lower(), v) for k, v in response_headers).get(
            "content-type", "application/json")
        if status >= 400:
            data, content_type = _as_error_body(data), "application/json"
        self._answer(status, data, content_type)

    def _manage_model(self, path: str, query: str, body: bytes):
        if self.command == "POST":
            return self._answer(*self.server.models.load(query, body))
        return self._answer(*self.server.models.unload(path.strip("/").split("/")[1]))

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering an error (and closing: a body left
        unread would be parsed as the next request on this connection)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._error(411, "send a Content-Length (chunked bodies are not accepted)")
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            self.close_connection = True
            self._error(400, f"bad Content-Length {', '.join(lengths)!r}")
            return None
        size = int(lengths[0])
        limit = self.server.backend.settings.max_payload_bytes
        if size > limit:
            self.close_connection = True
            self._error(413, f"payload of {size} bytes is over the limit of {limit} bytes")
            return None
        body = self.rfile.read(size)
        if len(body) < size:  # the client hung up before sending all of it
            self.close_connection = True
            logger.debug("client %s dropped the connection after %d of %d body bytes",
                         self.client_address[0], len(body), size)
            return None
        return body

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, headers too long) as JSON too."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in 1.1
            self.request_version = "HTTP/1.1"
        try:
            self._error(code, message or HTTPStatus(code).phrase)
        except (OSError, ValueError):
            pass

    def _error(self, status: int, message: str):
        self._answer(status, encode_error(message).encode())

    def _answer(self, status: int, body: bytes, content_type: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):  # MMS already writes an access log
        pass


def _allowed(method: str, path: str, multi_model: bool) -> bool:
    """The SageMaker routes only. Single model: invocations. Multi-model: the model
    management SageMaker uses as well; MMS's other management calls (scaling workers,
    loading from any path) stay off the public port."""
    if method == "POST" and path == "/invocations":
        return not multi_model
    if not multi_model:
        return False
    parts = path.strip("/").split("/")
    if parts == ["models"]:
        return method in ("GET", "POST")
    if len(parts) == 2 and parts[0] == "models":
        return method in ("GET", "DELETE")
    return len(parts) == 3 and parts[0] == "models" and parts[2] == "invoke" and method == "POST"


def _backend_path(path: str) -> str:
    """MMS sends /invocations only to a model of its `load_models`; the single model is
    registered through the management API (for its batching), so it is invoked by name."""
    route, question, query = path.partition("?")
    if route == "/invocations":
        return f"{SINGLE_MODEL_INVOKE}{question}{query}"
    return path


def _is_load_or_unload(method: str, path: str) -> bool:
    """POST /models and DELETE /models/<name>: the front answers these itself."""
    parts = path.strip("/").split("/")
    return (method == "POST" and parts == ["models"]) or \
        (method == "DELETE" and len(parts) == 2 and parts[0] == "models")


def _as_error_body(data: bytes) -> bytes:
    """`{"error": message}` whatever MMS or the handler answered."""
    return encode_error(_error_message(data)).encode()


def _error_message(data: bytes) -> str:
    """The message in an error body: the handler's `{"error": ...}` or MMS's own
    `{"code": 404, "type": "ModelNotFoundException", "message": ...}`."""
    try:
        document = json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace").strip()[:500] or "error"
    if isinstance(document, dict):
        message = document.get("error") or document.get("message")
        if isinstance(message, str) and message:
            return message
    return str(document)


def _free_loopback_port() -> int:
    """A free port for MMS. MMS 1.1.11 refuses addresses with ports from 32767 up
    ("Invalid port number", measured), which is where the OS hands out ephemeral ports."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ServeError("no free loopback port between 20000 and 32000 for the model server")


def serve(settings: ServeSettings) -> int:
    if settings.multi_model:
        print("multi-model endpoint: models are loaded through the management API", flush=True)
        gpus = gpu_count()
    else:
        summary = check_model(settings.model_dir)
        print(f"model ok: {summary['classes']} classes, image size {summary['image_size']}",
              flush=True)
        gpus = summary["gpus"]
    settings = replace(settings, gpus=gpus)
    if settings.workers == 0:
        settings = replace(settings, workers=default_workers(gpus))
    if settings.batch_size == 0:
        settings = replace(settings, batch_size=default_batch_size(gpus))
        if settings.batch_transform and settings.max_concurrent_transforms:
            # a batch larger than what the job keeps in flight would wait out the delay
            in_flight = math.ceil(settings.max_concurrent_transforms / settings.workers)
            settings = replace(settings, batch_size=min(settings.batch_size, in_flight))
    backend = ModelServer(settings)
    try:
        front = Front(settings.port, backend)
    except OSError as error:
        raise ServeError(f"cannot listen on port {settings.port}: {error}") from None
    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()
        threading.Thread(target=front.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)  # before MMS starts: a SIGTERM must not orphan it
    signal.signal(signal.SIGINT, stop)
    backend.start()
    threading.Thread(target=_watch, args=(front, backend, settings, stopping),
                     daemon=True).start()
    mode = f"batch transform {settings.execution_parameters()}" if settings.batch_transform \
        else "endpoint"
    print(f"serving on port {settings.port} ({mode}) with {settings.workers} worker(s), batches "
          f"of up to {settings.batch_size} request(s) within {settings.max_batch_delay_ms} ms; "
          f"MMS on 127.0.0.1:{backend.port}, runtime files in {settings.runtime_dir}",
          flush=True)
    try:
        front.serve_forever(poll_interval=0.2)
    finally:
        front.server_close()
        backend.stop()
        if settings.runtime_dir_is_temporary:
            shutil.rmtree(settings.runtime_dir, ignore_errors=True)
    if not stopping.is_set():
        print("ERROR the model server stopped or never became ready; see its log above",
              file=sys.stderr, flush=True)
        return 1
    return 0


def _probe_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _watch(front: Front, backend: ModelServer, settings: ServeSettings,
           stopping: threading.Event) -> None:
    """Single model: register it once MMS listens. Until a first prediction comes back,
    probe; then log readiness once. End serve if MMS dies, refuses the model, or no
    prediction came back within the startup timeout."""
    started = time.monotonic()
    probe = _probe_image()
    announced = False
    registered = settings.multi_model
    while not stopping.is_set() and backend.alive():
        if not registered:
            try:
                status, _, data = backend.request("GET", "/ping", timeout=2)
                if status == 200:  # MMS listens: register (returns once the workers are up)
                    status, data = backend.register(SINGLE_MODEL_NAME, settings.model_dir)
                    if status != 200:
                        print(f"ERROR the model server refused the model: "
                              f"{_error_message(data)}", file=sys.stderr, flush=True)
                        break
                    registered = True
            except (OSError, http_client.HTTPException):
                pass
        elif not front.answered_once.is_set():
            try:  # queued by MMS until a worker has loaded; bounded by the request timeout
                status = backend.request("POST", SINGLE_MODEL_INVOKE, probe,
                                         {"Content-Type": "image/jpeg"})[0]
            except (OSError, http_client.HTTPException):
                status = 0
            if status == 200:
                front.answered_once.set()
        if not announced and front.ready():
            print(f"ready after {time.monotonic() - started:.1f} s", flush=True)
            announced = True
        if not front.answered_once.is_set() and \
                time.monotonic() - started > settings.startup_timeout:
            print(f"ERROR no prediction within {settings.startup_timeout} s "
                  "(SAGEMAKER_STARTUP_TIMEOUT)", file=sys.stderr, flush=True)
            break
        time.sleep(0.25)
    if not stopping.is_set():
        front.shutdown()


def configure_logging() -> None:
    try:
        level = log_level_from_environment()
    except ValueError as error:
        raise ServeError(f"bad serving setting: {error}") from None
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main() -> int:
    try:
        configure_logging()
        return serve(ServeSettings.from_environment())
    except ServeError as error:
        print(f"ERROR {error}", file=sys.stderr, flush=True)
        return 1
