"""What the serving image answers a transform job at GET /execution-parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from dogbreed.serving.server import ServeSettings


def settings(workers: int, batch_size: int, payload_mb: int, job_concurrency: int = 0):
    return ServeSettings(port=8080, workers=workers, timeout_seconds=60,
                         max_payload_bytes=payload_mb * 2**20, multi_model=False,
                         startup_timeout=600, model_dir=Path("/opt/ml/model"),
                         runtime_dir=Path("/tmp/unused"), batch_size=batch_size,
                         batch_transform=True, max_concurrent_transforms=job_concurrency)


@pytest.mark.parametrize("workers, batch_size, payload_mb, expected", [
    (2, 4, 6, 8),  # the workers' batches, all in flight
    (1, 32, 6, 16),  # a GPU's batch of 32 at 6 MB each would be 192 MB: 100 // 6
    (4, 32, 100, 1),  # the largest payload leaves room for one request
    (1, 1, 1, 1),
])
def test_concurrency_fills_the_batches_within_the_100_mb_limit(workers, batch_size,
                                                                payload_mb, expected):
    answer = settings(workers, batch_size, payload_mb).execution_parameters()
    assert answer == {"MaxConcurrentTransforms": expected, "BatchStrategy": "SINGLE_RECORD",
                      "MaxPayloadInMB": payload_mb}
    assert answer["MaxConcurrentTransforms"] * payload_mb <= 100


def test_a_jobs_own_concurrency_is_answered_as_set():
    assert settings(1, 32, 6, job_concurrency=3).execution_parameters()[
        "MaxConcurrentTransforms"] == 3
