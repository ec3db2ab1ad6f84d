"""Endpoints on the two local backends: a `serve` process, or a local-mode endpoint.

Both run in the background after `deploy` returns (in their own session, so closing the
terminal does not stop them), answer on a local port, and are recorded in the state file
so that `predict` finds them and `cleanup` stops them. A SageMaker endpoint is the SDK's
business (launcher.sagemaker_sdk).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from launcher.errors import LauncherError
from launcher.job_dir import job_outputs

MODEL_FILES = ("model.json", "model.safetensors")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def model_dir_of(artifact: Path, unpack_to: Path) -> Path:
    """A folder with model.json and the weights, from a model/ folder, a model.tar.gz or a
    job folder (`find_job_outputs`; an archive is unpacked under `unpack_to`)."""
    folder = job_outputs(artifact, unpack_to, "model").model_dir
    missing = [name for name in MODEL_FILES if folder is None or not (folder / name).is_file()]
    if missing:
        raise LauncherError(f"{artifact} is not a model: no {', '.join(missing)} (give a "
                            "training job's model/ folder, its model.tar.gz, or its folder)")
    return folder


def model_tarball_of(artifact: Path, pack_to: Path) -> Path:
    """A model.tar.gz (what local mode and SageMaker load), packing a model/ folder if needed."""
    if artifact.is_file() and tarfile.is_tarfile(artifact):
        return artifact
    folder = model_dir_of(artifact, pack_to.parent / "unpacked")
    pack_to.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(pack_to, "w:gz") as archive:
        for item in sorted(folder.iterdir()):
            archive.add(item, arcname=item.name)
    return pack_to


def start_serve_process(model_dir: Path, endpoint_dir: Path, port: int,
                        workers: int | None, settings: dict[str, str] | None = None
                        ) -> subprocess.Popen:
    """`python -m dogbreed.serve` on endpoint_dir/model, in the background; `settings`:
    more of its environment (SAGEMAKER_BATCH for a transform)."""
    base = endpoint_dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    link = base / "model"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(model_dir.resolve(), target_is_directory=True)
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_BIND_TO_PORT=str(port),
               DOGBREED_SERVE_DIR=str(base / "runtime"), PYTHONUNBUFFERED="1")
    if workers:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
    env.update(settings or {})
    with open(base / "serve.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "dogbreed.serve"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


READY_FILE = "in-service"


def start_local_mode_endpoint(config_file: Path, name: str, model_tarball: Path, port: int,
                              endpoint_dir: Path, workdir: Path) -> subprocess.Popen:
    endpoint_dir.mkdir(parents=True, exist_ok=True)
    (endpoint_dir / READY_FILE).unlink(missing_ok=True)
    with open(endpoint_dir / "serve.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "launcher.local_endpoint", str(config_file), name,
             f"file://{model_tarball.resolve()}", str(port), str(workdir.resolve()),
             str((endpoint_dir / READY_FILE).resolve())],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def wait_until_ready(process: subprocess.Popen, url: str, log: Path,
                     ready_file: Path | None = None, timeout: float = 600) -> float:
    """Seconds until GET /ping is 200 (and `ready_file` exists, where the endpoint's host
    process says it is done deploying); the log's tail in the error if the server died."""
    import requests
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            tail = "\n".join(log.read_text().splitlines()[-15:]) if log.is_file() else ""
            raise LauncherError(f"the endpoint exited with {process.returncode} before it was "
                                f"ready; the end of {log}:\n{tail}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200 and \
                    (ready_file is None or ready_file.exists()):
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_process(process.pid)
    raise LauncherError(f"the endpoint was not ready after {timeout:.0f} s (see {log})")


ENDPOINT_COMMANDS = ("dogbreed.serve", "launcher.local_endpoint", "launcher.local_transform")


def stop_process(pid: int, timeout: float = 120) -> bool:
    """SIGTERM the endpoint's process (which stops what it started) and wait for its whole
    process group to end, killing what is left after `timeout`. False if it was already
    gone, or the pid now belongs to something else (after a reboot)."""
    import psutil
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    if not any(name in command for name in ENDPOINT_COMMANDS):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


def stop_process_surely(pid: int) -> None:
    """`stop_process`, and a second Ctrl-C during its wait kills the process group at once
    instead of leaving it running."""
    try:
        stop_process(pid)
    except KeyboardInterrupt:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise


def _reap(pid: int) -> None:
    """A child of this very process (deploy and cleanup in one run) must be waited for."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
