"""DistributedDataParallel on CPU (gloo): two workers on one host, and two hosts."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import FAST_HYPERPARAMETERS, channels_of, free_port, job_env, run_job
from dogbreed.metrics import parse_metrics
from launcher.job_dir import prepare_training_dir


def test_two_workers_on_one_host(sample_data, tmp_path):
    result = run_job(tmp_path, FAST_HYPERPARAMETERS, channels_of(sample_data),
                     DOGBREED_PROCS_PER_HOST="2", DOGBREED_MASTER_PORT=str(free_port()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "launching 2 DDP workers (1 host(s) x 2)" in result.stdout
    # Rank 0 alone logs: each epoch line once, one test line.
    assert parse_metrics(result.stdout)["epoch"] == [1, 2]
    assert len(parse_metrics(result.stdout)["test_accuracy"]) == 1
    description = json.loads((tmp_path / "model" / "model.json").read_text())
    assert description["training"]["world_size"] == 2
    # Both ranks' epochs together saw every training image (24 x 5 = 120, sharded 60 + 60).
    assert description["training"]["images"]["train"] == 120


def test_two_hosts_only_the_first_writes_the_artifact(sample_data, tmp_path):
    hosts = ["127.0.0.1", "algo-2"]  # host 0 is the master; its name must resolve
    port = str(free_port())
    processes = []
    for host in hosts:
        base = tmp_path / host
        prepare_training_dir(base, FAST_HYPERPARAMETERS, channels_of(sample_data), hosts=hosts,
                             current_host=host)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "dogbreed.train"],
            env=job_env(base, DOGBREED_MASTER_PORT=port), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert "launching 2 DDP workers (2 host(s) x 1)" in outputs[0]
    assert (tmp_path / hosts[0] / "model" / "model.safetensors").is_file()
    assert list((tmp_path / hosts[1] / "model").iterdir()) == []
    assert parse_metrics(outputs[0])["epoch"] == [1, 2]
    assert parse_metrics(outputs[1])["epoch"] == []
