"""The one `sagemaker-local` network: created once under a host lock, so that local-mode
jobs started at the same moment on a fresh Docker host do not create two (after which
every local-mode job fails with "network sagemaker-local is ambiguous")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LAUNCHER_CONFIG, TRAIN_IMAGE
from launcher.docker_network import NETWORK, ensure_local_network, networks_named
from launcher.errors import LauncherError

REPO = Path(__file__).resolve().parents[1]


def remove_every_local_network() -> None:
    """A host as CI's first run has it: no `sagemaker-local` network at all."""
    found = networks_named()
    if any(net["containers"] for net in found):
        pytest.skip(f"a {NETWORK} network is in use by containers on this host; "
                    "the test would have to stop them")
    for net in found:
        subprocess.run(["docker", "network", "rm", net["id"]], check=True, capture_output=True)
    assert networks_named() == []


def duplicate_networks(count: int) -> list[str]:
    """`count` networks of the same name, as racing compose runs leave them (the engine
    allows it when the API call does not ask for its duplicate check)."""
    import docker
    client = docker.from_env()
    return [client.networks.create(NETWORK, check_duplicate=False).id for _ in range(count)]


def container_on(network_id: str) -> str:
    """A running container attached to one of several same-named networks: started on the
    default bridge, then connected by full id (`docker run --network` resolves the name
    at start and fails as ambiguous, which is the very failure under test)."""
    started = subprocess.run(["docker", "run", "-d", "--rm", "--entrypoint", "sleep",
                              TRAIN_IMAGE, "300"], capture_output=True, text=True, check=True)
    container = started.stdout.strip()
    subprocess.run(["docker", "network", "connect", network_id, container], check=True,
                   capture_output=True)
    return container


@pytest.fixture
def fresh_host():
    remove_every_local_network()
    yield
    ensure_local_network()  # what the other tests find, as after any launcher command


def test_two_jobs_started_at_once_on_a_host_without_the_network(fresh_host, sample_data,
                                                                tmp_path):
    (tmp_path / "launcher.toml").write_text(LAUNCHER_CONFIG)
    hyperparameters = tmp_path / "hyperparameters.json"
    hyperparameters.write_text(json.dumps({"epochs": 1, "image-size": 32, "pretrained": "none",
                                           "trainable": "fc", "batch-size": 32}))
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    jobs = [subprocess.Popen([sys.executable, "-m", "launcher.local_mode_job", "launcher.toml",
                              f"dogbreed-network-{n}", str(hyperparameters), str(sample_data),
                              str(tmp_path / f"output-{n}")],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
            for n in (0, 1)]
    logs = [job.communicate(timeout=600)[0] for job in jobs]
    for n, (job, log) in enumerate(zip(jobs, logs)):
        assert job.returncode == 0, log[-3000:]
        assert "test_accuracy=" in log
        assert (tmp_path / f"output-{n}" / "model.tar.gz").is_file()
    assert len(networks_named()) == 1


def test_unused_duplicates_left_by_an_earlier_run_are_repaired(fresh_host, capsys):
    created = duplicate_networks(3)
    assert len(networks_named()) == 3
    kept = ensure_local_network()
    assert [net["id"] for net in networks_named()] == [kept]
    assert kept in created
    assert "removed 2 duplicate Docker network(s) called sagemaker-local" in capsys.readouterr().out


def test_duplicates_in_use_stop_with_the_command_that_fixes_them(fresh_host):
    first, second = duplicate_networks(2)
    containers = []
    try:
        for network in (first, second):
            containers.append(container_on(network))
        with pytest.raises(LauncherError) as refused:
            ensure_local_network()
        message = str(refused.value)
        assert "2 Docker networks are called sagemaker-local" in message
        assert f"docker network rm {first[:12]} {second[:12]}" in message
        assert len(networks_named()) == 2  # nothing in use was touched
    finally:
        if containers:
            subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)
        for network in (first, second):
            subprocess.run(["docker", "network", "rm", network], capture_output=True)


def test_one_in_use_duplicate_is_kept_and_the_unused_one_removed(fresh_host):
    first, second = duplicate_networks(2)
    container = container_on(second)
    try:
        assert ensure_local_network() == second
        assert [net["id"] for net in networks_named()] == [second]
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
