"""The training program's exit: it skips the interpreter's teardown, but not what must
happen before a job counts as ended (exit handlers, buffered output, the exit status)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def test_exit_runs_the_exit_handlers_flushes_and_keeps_the_status(tmp_path: Path):
    marker = tmp_path / "handler-ran"
    program = textwrap.dedent(f"""
        import atexit, sys
        from dogbreed.train import exit_without_teardown
        atexit.register(lambda: open({str(marker)!r}, "w").write("done"))
        sys.stdout.write("buffered line")  # no newline: still in the buffer
        exit_without_teardown(3)
        print("never reached")
    """)
    # Output to a pipe is block-buffered (unless PYTHONUNBUFFERED is set, as it may be
    # around the tests), so an unflushed line would be lost.
    environment = {name: value for name, value in os.environ.items()
                   if name != "PYTHONUNBUFFERED"}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=120, env=environment)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "buffered line"
    assert marker.read_text() == "done"
