"""The log level SageMaker asks for: one reading for the front and for MMS's workers."""

from __future__ import annotations

import logging
import os

LOG_LEVEL_ENV = "SAGEMAKER_CONTAINER_LOG_LEVEL"


def log_level_from_environment() -> int:
    """SAGEMAKER_CONTAINER_LOG_LEVEL: a number, as the SDK's `container_log_level` sets it,
    or a name; INFO when unset. ValueError names the bad value."""
    value = os.environ.get(LOG_LEVEL_ENV, "").strip() or "INFO"
    level = int(value) if value.isdigit() else logging.getLevelName(value.upper())
    if not isinstance(level, int):
        raise ValueError(f"{LOG_LEVEL_ENV}={value!r}")
    return level
