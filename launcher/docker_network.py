"""Exactly one `sagemaker-local` Docker network before any local-mode job or endpoint.

SageMaker local mode's docker-compose file attaches every container to a network named
`sagemaker-local` and lets compose create it on first use. Two jobs started at the same
moment on a host without it both create it (the engine's duplicate check is not atomic),
and from then on every local-mode job fails with "network sagemaker-local is ambiguous".
So the launcher creates it once, under a host-wide file lock, before compose runs; and
repairs duplicates an earlier run left behind when no container uses them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from launcher.errors import LauncherError

NETWORK = "sagemaker-local"
# The label compose (v1 and v2) sets on networks it creates for the key `sagemaker-local`
# of the SDK's compose file; compose v2 refuses a same-named network without it.
COMPOSE_LABEL = f"com.docker.compose.network={NETWORK}"
LOCK_FILE = Path(os.environ.get("LAUNCHER_DOCKER_LOCK",
                                Path(tempfile.gettempdir()) / "sagemaker-local-network.lock"))


@contextlib.contextmanager
def host_lock(path: Path = LOCK_FILE) -> Iterator[None]:
    """Held by one launcher process on this host at a time (any user: the file is 0666)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def networks_named(name: str = NETWORK) -> list[dict]:
    """Every network called exactly `name` (the engine's name filter matches substrings),
    oldest first, each with the containers attached to it."""
    listed = docker("network", "ls", "--no-trunc", "--filter", f"name={name}",
                    "--format", "{{.ID}} {{.Name}}")
    if listed.returncode != 0:
        raise LauncherError(f"docker network ls failed: {listed.stderr.strip()}")
    ids = [line.split()[0] for line in listed.stdout.splitlines()
           if line.split()[1:] == [name]]
    if not ids:
        return []
    inspected = docker("network", "inspect", *ids)
    if inspected.returncode != 0:  # one vanished in between: look again
        return networks_named(name)
    found = [{"id": net["Id"], "created": net.get("Created", ""),
              "containers": sorted(c.get("Name", cid)
                                   for cid, c in (net.get("Containers") or {}).items())}
             for net in json.loads(inspected.stdout)]
    return sorted(found, key=lambda net: net["created"])


def ensure_local_network(name: str = NETWORK) -> str:
    """The id of the one network called `name`, created if missing; duplicates that no
    container uses are removed. Raises LauncherError (saying how to fix it) when more than
    one duplicate is in use."""
    with host_lock():
        found = networks_named(name)
        if not found:
            created = docker("network", "create", "--label", COMPOSE_LABEL, name)
            if created.returncode != 0:
                raise LauncherError(f"cannot create the Docker network {name}: "
                                    f"{created.stderr.strip()}")
            return created.stdout.strip()
        if len(found) == 1:
            return found[0]["id"]
        in_use = [net for net in found if net["containers"]]
        if len(in_use) > 1:
            listing = "; ".join(f"{net['id'][:12]} used by {', '.join(net['containers'])}"
                                for net in in_use)
            ids = " ".join(net["id"][:12] for net in found)
            raise LauncherError(
                f"{len(found)} Docker networks are called {name} ({listing}), so local-mode "
                "jobs fail with 'network is ambiguous'. Stop those containers "
                f"(docker rm -f CONTAINER ...), then run: docker network rm {ids}")
        keep = in_use[0] if in_use else found[0]
        for net in found:
            if net is not keep:
                removed = docker("network", "rm", net["id"])
                if removed.returncode != 0:
                    raise LauncherError(
                        f"cannot remove the duplicate Docker network {name} "
                        f"{net['id'][:12]}: {removed.stderr.strip()}; remove it by hand "
                        f"(docker network rm {net['id'][:12]})")
        print(f"removed {len(found) - 1} duplicate Docker network(s) called {name}",
              flush=True)
        return keep["id"]
