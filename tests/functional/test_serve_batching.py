"""Server-side batching for real: `python -m dogbreed.serve` with one worker that takes up
to 8 requests per forward pass, waiting at most 300 ms to fill a batch; clients send
concurrently over HTTP."""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from conftest import RunningServer, model_server_processes, one_model
from dogbreed.artifact import write_artifact
from dogbreed.model import build_model
from dogbreed.sample_data import draw_image
from dogbreed.transforms import eval_preprocessing

BATCH_SIZE = 8
DELAY_MS = 300
JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def batching(trained_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("batching")
    (base / "model").symlink_to(trained_model)
    running = RunningServer(base, SAGEMAKER_MODEL_SERVER_WORKERS="1",
                            DOGBREED_BATCH_SIZE=str(BATCH_SIZE),
                            DOGBREED_MAX_BATCH_DELAY_MS=str(DELAY_MS),
                            DOGBREED_MAX_IMAGE_PIXELS="1000000",
                            SAGEMAKER_CONTAINER_LOG_LEVEL="10").start()  # a line per batch
    yield running
    assert running.stop() == 0
    assert model_server_processes(running.runtime_dir) == []


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def _backend_batches(server: RunningServer) -> list[int]:
    """The batch sizes the worker ran: the handler's debug line per batch, in MMS's log."""
    return [int(size) for size in re.findall(r"dogbreed batch of (\d+) request",
                                              server.log.read_text())]


def test_the_model_is_registered_with_the_batch_settings(batching):
    """MMS itself reports the batch size and delay it applies to the model (its management
    API, on the loopback port the serve log names)."""
    described = batching.registered_model()
    assert described["batchSize"] == BATCH_SIZE
    assert described["maxBatchDelay"] == DELAY_MS
    assert len(described["workers"]) == 1
    # the worker ran both batch shapes a CPU worker meets before the first request
    assert "model loaded on cpu in float32, batch sizes 1, 8 warmed up" in \
        batching.log.read_text()


def _mixed_requests(sample_data) -> list[tuple[str, bytes, dict, int]]:
    photos = sorted((sample_data / "test").rglob("*.jpg"))
    good = [(f"good {i}", photo.read_bytes(),
             dict(JPEG, **{"X-Amzn-SageMaker-Custom-Attributes": f"top_k={1 + i % 3}"}), 200)
            for i, photo in enumerate(photos[:5])]
    truncated = photos[0].read_bytes()
    return good + [
        ("truncated", truncated[: len(truncated) // 2], JPEG, 400),
        ("wrong content type", photos[1].read_bytes(), {"Content-Type": "text/csv"}, 415),
        ("over the pixel limit", _png(1500, 1000), {"Content-Type": "image/png"}, 400),
        ("unsupported Accept", photos[2].read_bytes(), dict(JPEG, Accept="text/csv"), 406),
    ]


def test_a_mixed_batch_answers_each_request_with_its_own_status(batching, sample_data):
    """Nine requests sent at once (a barrier releases them together) form batches of up to
    8: each bad one gets its own 4xx, each good one its 200 with its own top_k, and the
    good ones answer what they answer alone."""
    requests_ = _mixed_requests(sample_data)
    alone = {name: requests.post(f"{batching.url}/invocations", data=body, headers=headers,
                                 timeout=30) for name, body, headers, status in requests_
             if status == 200}
    before = len(_backend_batches(batching))
    start = threading.Barrier(len(requests_))

    def send(case):
        name, body, headers, _ = case
        start.wait()
        return requests.post(f"{batching.url}/invocations", data=body, headers=headers,
                             timeout=60)

    for _ in range(3):  # each round: the nine requests together
        with ThreadPoolExecutor(len(requests_)) as pool:
            answers = list(pool.map(send, requests_))
        for (name, _, headers, status), answer in zip(requests_, answers):
            assert answer.status_code == status, (name, answer.text)
            if status != 200:
                assert list(answer.json()) == ["error"], name
                continue
            top_k = int(headers["X-Amzn-SageMaker-Custom-Attributes"].split("=")[1])
            [predictions] = answer.json()["predictions"]
            assert len(predictions) == top_k, name
            expected = alone[name].json()["predictions"][0][:top_k]
            # a batch runs other kernels' blocking: the same classes, probabilities to 1e-4
            assert [p["class_id"] for p in predictions] == [p["class_id"] for p in expected]
            assert [p["probability"] for p in predictions] == pytest.approx(
                [p["probability"] for p in expected], abs=1e-4), name
    batches = _backend_batches(batching)[before:]
    assert max(batches) > 1, batches  # requests did share forward passes
    assert max(batches) <= BATCH_SIZE
    assert len(batches) < 3 * len(requests_), batches


def _full_size_model(folder) -> None:
    """A 224 px ResNet50 with a 133-way head (random weights) as a real artifact: the
    production model's replies and compute time."""
    names = [f"Breed {index:03d}" for index in range(133)]
    write_artifact(folder, state_dict=build_model(133, "none", "fc").state_dict(),
                   architecture="resnet50", class_folders=names, class_names=names,
                   preprocessing=eval_preprocessing(224), hyperparameters={}, metrics={},
                   history=[], training={})


def test_sixteen_clients_on_the_default_batching_are_all_answered(tmp_path):
    """The production model with the CPU defaults (batches of 4 within 5 ms), 16 clients
    sending photos of varied sizes: MMS's frontend reads batch replies in pieces, and a
    piece ending inside a request's status code or response headers once failed the whole
    batch with 500 (3 of 320 requests here before `pad_for_split_reads`)."""
    _full_size_model(tmp_path / "model")
    server = RunningServer(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1",
                           SAGEMAKER_CONTAINER_LOG_LEVEL="10").start()
    rng = random.Random(0)
    sizes = [(500, 375)] * 6 + [(375, 500), (300, 225), (800, 600), (1600, 1200)]
    bodies = [_jpeg(draw_image(index % 7, 10, rng).resize(size))
              for index, size in enumerate(sizes)]
    try:
        def client(number: int) -> list[int]:
            with requests.Session() as session:
                return [session.post(f"{server.url}/invocations", headers=JPEG, timeout=120,
                                     data=bodies[(number + i) % len(bodies)]).status_code
                        for i in range(20)]

        with ThreadPoolExecutor(16) as pool:
            statuses = [code for codes in pool.map(client, range(16)) for code in codes]
        assert statuses == [200] * 320, {code: statuses.count(code) for code in statuses}
        assert max(_backend_batches(server)) == 4  # the CPU default batch size
    finally:
        assert server.stop() == 0


def test_a_lone_request_waits_at_most_the_batch_delay(batching, sample_data):
    """A request alone waits for company no longer than DOGBREED_MAX_BATCH_DELAY_MS: its
    latency is the delay plus the work (~0.1 s for this 64 px model), not a multiple of it."""
    body = sorted((sample_data / "test").rglob("*.jpg"))[0].read_bytes()
    latencies = []
    for _ in range(5):
        started = time.monotonic()
        answer = requests.post(f"{batching.url}/invocations", data=body, headers=JPEG, timeout=30)
        latencies.append(time.monotonic() - started)
        assert answer.status_code == 200
    median = statistics.median(latencies)
    assert DELAY_MS / 1000 * 0.9 <= median < DELAY_MS / 1000 + 2.0, latencies


def test_sixty_four_clients_connecting_at_once_are_all_answered(batching, sample_data):
    """64 new connections in the same instant (the benchmark's top concurrency): the front's
    listen backlog once was socketserver's 5, and connections were reset."""
    body = sorted((sample_data / "test").rglob("*.jpg"))[0].read_bytes()
    start = threading.Barrier(64)

    def send(_):
        start.wait()
        try:
            return requests.post(f"{batching.url}/invocations", data=body, headers=JPEG,
                                 timeout=60).status_code
        except requests.ConnectionError as error:
            return type(error).__name__

    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(send, range(64)))
    assert statuses == [200] * 64, {status: statuses.count(status) for status in statuses}


@pytest.mark.parametrize("setting, value, message", [
    ("DOGBREED_BATCH_SIZE", "0", "DOGBREED_BATCH_SIZE='0': a whole number from 1 to 256"),
    ("DOGBREED_BATCH_SIZE", "eight", "DOGBREED_BATCH_SIZE='eight': a whole number"),
    ("DOGBREED_BATCH_SIZE", "100000", "DOGBREED_BATCH_SIZE='100000': a whole number from 1 to"
                                      " 256 (requests per forward pass; 1 turns batching off)"),
    ("DOGBREED_MAX_BATCH_DELAY_MS", "fast", "DOGBREED_MAX_BATCH_DELAY_MS='fast': a whole number"
                                            " from 0 to 10000"),
    ("DOGBREED_MAX_BATCH_DELAY_MS", "-5", "DOGBREED_MAX_BATCH_DELAY_MS='-5'"),
    ("DOGBREED_PRECISION", "fp16", "DOGBREED_PRECISION='fp16': use auto, fp32, bf16"),
    ("DOGBREED_TOP_K", "0", "DOGBREED_TOP_K='0': a whole number from 1 to 1000 (breeds per "
                            "answer when a request asks for none)"),
    ("SAGEMAKER_BATCH", "yes", "SAGEMAKER_BATCH='yes': true or false"),
    ("SAGEMAKER_BATCH_STRATEGY", "LINE", "SAGEMAKER_BATCH_STRATEGY='LINE': SINGLE_RECORD or "
                                         "MULTI_RECORD"),
    ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "-1", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS='-1': a "
                                                  "whole number from 0 to 10000"),
    ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "six", "SAGEMAKER_MAX_PAYLOAD_IN_MB='six': megabytes per "
                                           "request, up to 100"),
    ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "500", "SAGEMAKER_MAX_PAYLOAD_IN_MB='500'"),
])
def test_bad_batch_settings_stop_serve_at_start(trained_model, tmp_path, setting, value,
                                                message):
    (tmp_path / "model").symlink_to(trained_model)
    server = RunningServer(tmp_path, **{setting: value})
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "dogbreed.serve"], env=server.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"ERROR bad serving setting: {message}" in result.stderr
    assert time.monotonic() - started < 10  # before any model check or MMS start
    assert not server.runtime_dir.exists()


def test_the_batch_settings_reach_a_multi_model_endpoint(trained_model, tmp_path):
    """A model loaded through SageMaker's LoadModel gets the same batching."""
    store = tmp_path / "models"
    store.mkdir()
    shutil.copytree(trained_model, store / "breeds")  # a symlink would lead out of the store
    server = RunningServer(tmp_path, SAGEMAKER_MULTI_MODEL="true",
                           SAGEMAKER_MODEL_SERVER_WORKERS="1", DOGBREED_BATCH_SIZE="3",
                           DOGBREED_MAX_BATCH_DELAY_MS="20").start()
    try:
        loaded = requests.post(f"{server.url}/models", timeout=120, data=json.dumps(
            {"model_name": "breeds", "url": str(store / "breeds")}))
        assert loaded.status_code == 200, loaded.text
        described = one_model(requests.get(f"{server.url}/models/breeds", timeout=10).json())
        assert (described["batchSize"], described["maxBatchDelay"]) == (3, 20)
    finally:
        assert server.stop() == 0
