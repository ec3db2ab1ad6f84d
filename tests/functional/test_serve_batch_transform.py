"""The serving image as a Batch Transform container: `GET /execution-parameters` and the
SAGEMAKER_BATCH* settings a transform job sets, with `python -m dogbreed.serve` for real."""

from __future__ import annotations

import requests

from conftest import RunningServer


def test_a_transform_job_asks_for_the_execution_parameters(trained_model, sample_data,
                                                           tmp_path):
    """A job that set none gets what suits the server: as many requests in flight as its
    workers batch together (2 workers x batches of 4), one file per request. Its requests
    carry no custom attributes: DOGBREED_TOP_K in the model's environment sets the top-k."""
    (tmp_path / "model").symlink_to(trained_model)
    server = RunningServer(tmp_path, SAGEMAKER_BATCH="true", DOGBREED_BATCH_SIZE="4",
                           DOGBREED_TOP_K="2").start()
    try:
        answer = requests.get(f"{server.url}/execution-parameters", timeout=10)
        assert answer.status_code == 200
        assert answer.json() == {"MaxConcurrentTransforms": 8, "BatchStrategy": "SINGLE_RECORD",
                                 "MaxPayloadInMB": 6}
        assert server.registered_model()["batchSize"] == 4
        photo = sorted((sample_data / "test").rglob("*.jpg"))[0]
        answer = requests.post(f"{server.url}/invocations", data=photo.read_bytes(),
                               timeout=30, headers={"Content-Type": "application/x-image"})
        assert answer.status_code == 200
        assert len(answer.json()["predictions"][0]) == 2
        asked = requests.post(f"{server.url}/invocations", data=photo.read_bytes(), timeout=30,
                              headers={"Content-Type": "image/jpeg",
                                       "X-Amzn-SageMaker-Custom-Attributes": "top_k=3"})
        assert asked.status_code == 200
        assert len(asked.json()["predictions"][0]) == 3  # a request's own still wins
    finally:
        assert server.stop() == 0


def test_the_jobs_own_settings_are_answered_and_bound_the_batch(trained_model, tmp_path):
    """MaxConcurrentTransforms 3 over 2 workers: batches of at most 2, or a batch would
    wait out the delay for requests the job never sends."""
    (tmp_path / "model").symlink_to(trained_model)
    server = RunningServer(tmp_path, SAGEMAKER_BATCH="true",
                           SAGEMAKER_MAX_CONCURRENT_TRANSFORMS="3",
                           SAGEMAKER_BATCH_STRATEGY="MULTI_RECORD",
                           SAGEMAKER_MAX_PAYLOAD_IN_MB="20").start()
    try:
        assert requests.get(f"{server.url}/execution-parameters", timeout=10).json() == {
            "MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 20}
        assert server.registered_model()["batchSize"] == 2
    finally:
        assert server.stop() == 0


def test_an_endpoint_has_no_execution_parameters(trained_model, tmp_path):
    (tmp_path / "model").symlink_to(trained_model)
    server = RunningServer(tmp_path).start()
    try:
        answer = requests.get(f"{server.url}/execution-parameters", timeout=10)
        assert answer.status_code == 404
        assert answer.json() == {"error": "no endpoint GET /execution-parameters"}
    finally:
        assert server.stop() == 0
