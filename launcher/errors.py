"""The one error type the CLI prints as `error: <message>` instead of a traceback."""


class LauncherError(RuntimeError):
    """A user mistake or a missing prerequisite; the message says what to fix."""
