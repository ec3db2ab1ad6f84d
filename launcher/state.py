"""What the launcher created and where, in `<workdir>/state.json`.

`predict` finds the endpoint `deploy` made, `train` finds the tuner's best hyperparameters
and `deploy` the last model, and `cleanup` knows exactly what to remove (only what the
launcher created, never other endpoints in the account).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


def load_state(workdir: Path) -> dict[str, Any]:
    path = workdir / STATE_FILE
    if not path.is_file():
        return {"endpoints": {}}
    state = json.loads(path.read_text())
    state.setdefault("endpoints", {})
    return state


def save_state(workdir: Path, state: dict[str, Any]) -> None:
    """Written whole and renamed into place: an interrupted write leaves the old file."""
    workdir.mkdir(parents=True, exist_ok=True)
    temporary = workdir / f".{STATE_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.replace(workdir / STATE_FILE)


def update_state(workdir: Path, **changes: Any) -> dict[str, Any]:
    state = load_state(workdir)
    state.update(changes)
    save_state(workdir, state)
    return state
