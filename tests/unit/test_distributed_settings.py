"""The settings DDP takes from SageMaker's environment (in process; the two-worker and
two-host jobs are in functional/test_distributed.py)."""

from __future__ import annotations


def test_nccl_and_gloo_bind_to_the_interface_sagemaker_names_when_the_host_has_it(tmp_path):
    from dogbreed.training.distributed import socket_interface_env
    (tmp_path / "eth0").mkdir()
    assert socket_interface_env("eth0", tmp_path) == {"NCCL_SOCKET_IFNAME": "eth0",
                                                      "GLOO_SOCKET_IFNAME": "eth0"}
    # The process backend's config says eth0 on any machine: a laptop may have none.
    assert socket_interface_env("eth1", tmp_path) == {}
    assert socket_interface_env(None, tmp_path) == {}
