"""Run txbackup itself as a separate process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TXBACKUP = [sys.executable, "-m", "txbackup"]


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once it has ended."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def txbackup(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``txbackup ARGS`` and return its result (text mode, output captured)."""
    command = [*TXBACKUP, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


@contextmanager
def sample_server_process(*extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``txbackup sample-server --port 0 EXTRA``; yields (process, "127.0.0.1:port")."""
    proc = subprocess.Popen(
        [*TXBACKUP, "sample-server", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            proc.kill()
            raise RuntimeError(
                f"sample-server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield proc, line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
