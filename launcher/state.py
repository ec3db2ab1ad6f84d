"""What the launcher created and where, in `<workdir>/state.json`.

`predict` finds the endpoint `deploy` made, `train` finds the tuner's best hyperparameters
and `deploy` the last model, and `cleanup` knows exactly what to remove (only what the
launcher created, never other endpoints in the account).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from launcher.errors import LauncherError

STATE_FILE = "state.json"


def load_state(workdir: Path) -> dict[str, Any]:
    path = workdir / STATE_FILE
    if not path.is_file():
        return {"endpoints": {}}
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.setdefault("endpoints", {}),
                                                         dict):
            raise ValueError("not an object with an endpoints table")
    except ValueError as error:
        raise LauncherError(f"{path} is damaged ({error}); it lists what the launcher "
                            "created: repair it, or move it away (endpoints it lists must "
                            "then be stopped by hand)") from None
    return state


def save_state(workdir: Path, state: dict[str, Any]) -> None:
    """Written whole and renamed into place: an interrupted write leaves the old file."""
    workdir.mkdir(parents=True, exist_ok=True)
    temporary = workdir / f".{STATE_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.replace(workdir / STATE_FILE)


@contextlib.contextmanager
def locked_state(workdir: Path) -> Iterator[dict[str, Any]]:
    """Read, change and write the state while holding its lock, so that two launcher
    commands running at once (a deploy and a train) do not lose each other's records."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".state.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load_state(workdir)
        yield state
        save_state(workdir, state)


def update_state(workdir: Path, **changes: Any) -> dict[str, Any]:
    with locked_state(workdir) as state:
        state.update(changes)
    return state


def remember_endpoint(workdir: Path, name: str, record: dict[str, Any]) -> None:
    """Record an endpoint (before it exists, where a failed start leaves things to remove)."""
    with locked_state(workdir) as state:
        state["endpoints"][name] = record
        state["last_endpoint"] = name


def forget_endpoint(workdir: Path, name: str) -> None:
    with locked_state(workdir) as state:
        state["endpoints"].pop(name, None)
        if state.get("last_endpoint") == name:
            state.pop("last_endpoint")
