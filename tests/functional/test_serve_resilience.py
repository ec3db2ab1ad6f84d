"""What already holds under trouble, kept true: a model worker killed under load costs at
most the batch of requests it was computing, and idle half-open connections do not hold up real
ones."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from conftest import RunningServer, model_server_processes

JPEG = {"Content-Type": "image/jpeg"}
CLIENTS = 16
REQUESTS = 200
HALF_OPEN = 200
BATCH_SIZE = 4


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("resilience")
    (base / "model").symlink_to(trained_model)
    running = RunningServer(base, DOGBREED_BATCH_SIZE=str(BATCH_SIZE)).start()
    yield running
    assert running.stop() == 0
    # Workers orphaned by the listener's death go too: nothing from this server is left.
    deadline = time.monotonic() + 10
    while model_server_processes(base) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert model_server_processes(base) == []


@pytest.fixture(scope="module")
def image(sample_data) -> bytes:
    return sorted((sample_data / "test").rglob("*.jpg"))[0].read_bytes()


def _model_workers(server: RunningServer) -> list[psutil.Process]:
    """The processes that hold the model and answer: MMS starts one listener
    (model_service_worker.py) that forks one such worker per frontend connection."""
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "model_service_worker" in " ".join(process.parent().cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def _predict(server: RunningServer, image: bytes) -> int:
    try:
        return requests.post(f"{server.url}/invocations", data=image, headers=JPEG,
                             timeout=60).status_code
    except requests.RequestException:
        return 0


def _predict_when(server: RunningServer, image: bytes) -> tuple[int, float]:
    """Status and when the answer came (monotonic)."""
    status = _predict(server, image)
    return status, time.monotonic()


def _listener(server: RunningServer) -> psutil.Process:
    """MMS's model_service_worker.py that accepts the frontend's connections and forks the
    workers: it holds no model and computes nothing."""
    (listener,) = {worker.parent() for worker in _model_workers(server)}
    return listener


def _kill_under_load(server: RunningServer, image: bytes,
                     victim: psutil.Process) -> tuple[list[int], list[float], float]:
    """SIGKILL victim (no cleanup, as the kernel's OOM killer does) once REQUESTS requests
    from CLIENTS clients are flowing: the statuses in order sent, when each answer came,
    and when the kill happened."""
    flowing = threading.Event()
    killed_at: list[float] = []

    def kill_once_requests_are_flowing():
        flowing.wait(30)
        victim.kill()
        killed_at.append(time.monotonic())

    killer = threading.Thread(target=kill_once_requests_are_flowing)
    killer.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = []
        for index in range(REQUESTS):
            futures.append(pool.submit(_predict_when, server, image))
            if index == CLIENTS * 2:
                flowing.set()
        answers = [future.result() for future in futures]
    killer.join()
    assert victim.wait(10) is None or not victim.is_running()
    return [status for status, _ in answers], [when for _, when in answers], killed_at[0]


def test_a_model_worker_killed_under_load_costs_only_its_batch(server, image):
    """The worker computing a batch dies: the requests of that batch are answered 500
    (MMS's frontend cannot replay them), every other request is answered, within 5 s of
    the kill, and MMS starts a worker in its place."""
    workers = _model_workers(server)
    assert len(workers) == 2, [process.cmdline() for process in workers]
    victim = workers[0]
    statuses, answered_at, killed_at = _kill_under_load(server, image, victim)
    failed = {code: statuses.count(code) for code in set(statuses) - {200}}
    assert sum(failed.values()) <= BATCH_SIZE and set(failed) <= {500}, failed
    assert min(when for when in answered_at if when > killed_at) - killed_at < 5
    deadline = killed_at + 60
    while len(_model_workers(server)) < len(workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    replaced = _model_workers(server)
    assert len(replaced) == len(workers) and victim.pid not in {p.pid for p in replaced}
    assert _predict(server, image) == 200


def test_a_killed_listener_costs_no_request(server, image):
    """The process that forks the workers dies: the workers it forked go on answering."""
    workers = {process.pid for process in _model_workers(server)}
    statuses, _, _ = _kill_under_load(server, image, _listener(server))
    assert statuses.count(200) == REQUESTS, {code: statuses.count(code) for code in statuses}
    assert _predict(server, image) == 200
    survivors = {process.pid for process in psutil.process_iter()
                 if process.pid in workers and process.status() != psutil.STATUS_ZOMBIE}
    assert survivors == workers


def test_idle_half_open_connections_do_not_hold_up_a_request(server, image):
    """Clients that connect and send half a request (or nothing) and then go quiet, as a
    slowloris or a crowd of phones on bad networks do: each holds a thread of the front,
    none holds the others up."""
    before = [_timed_predict(server, image) for _ in range(5)]
    idle = []
    try:
        for index in range(HALF_OPEN):
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            if index % 2:
                connection.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # no end
            idle.append(connection)
        during = [_timed_predict(server, image) for _ in range(5)]
    finally:
        for connection in idle:
            connection.close()
    assert all(status == 200 for status, _ in before + during)
    slowest_before = max(seconds for _, seconds in before)
    median_during = sorted(seconds for _, seconds in during)[2]
    # Generous: a shared CI machine is noisy; a request queued behind the idle ones would
    # wait for the socket timeout (seconds), not milliseconds.
    assert median_during < max(1.0, 5 * slowest_before), (before, during)


def _timed_predict(server: RunningServer, image: bytes) -> tuple[int, float]:
    started = time.monotonic()
    status = _predict(server, image)
    return status, time.monotonic() - started
