"""Where jobs and endpoints run: one class per backend, picked here by name.

A backend changes where things run, never what they do (DESIGN.md): the commands in
`launcher.commands` read the config, check hyperparameters, print and record state the
same way on every backend, and call the backend's verbs (`launcher.backends.base`) for
the part that differs. This registry is the only place that knows the backends' names.
"""

from __future__ import annotations

import importlib

from launcher.backends.base import Backend

# name -> "module:class"; modules are imported on use (the sagemaker one pulls in the SDK).
REGISTRY = {
    "process": "launcher.backends.process:ProcessBackend",
    "local": "launcher.backends.local:LocalBackend",
    "sagemaker": "launcher.backends.sagemaker:SageMakerBackend",
}
NAMES = tuple(REGISTRY)


def backend(name: str) -> Backend:
    """The backend called `name` (one of NAMES)."""
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
