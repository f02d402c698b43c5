"""Progress of long work: readable lines for people, JSON lines for machines.

The engine reports events; a reporter renders them. ``HumanReporter`` writes
to stderr (stdout stays for the result), ``JsonReporter`` writes one JSON
object per line to stdout, ``SilentReporter`` drops them (library use, tests).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Protocol, TextIO


class Reporter(Protocol):
    def event(self, kind: str, /, **fields: Any) -> None:
        """A step happened: ``phase`` (name=...), ``target`` (name, phase, ms...),
        ``warning`` (message), ``done`` (set_id...)."""
        ...

    def bytes_done(self, target: str, count: int) -> None:
        """``count`` more bytes of ``target`` went to storage (called from threads)."""
        ...


class SilentReporter:
    def event(self, kind: str, /, **fields: Any) -> None:
        pass

    def bytes_done(self, target: str, count: int) -> None:
        pass


def human_size(count: float) -> str:
    """``count`` bytes for people: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class _ByteTally:
    """Bytes per target, released as a snapshot at most every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._bytes: dict[str, int] = {}
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def add(self, target: str, count: int) -> dict[str, int] | None:
        with self._lock:
            self._bytes[target] = self._bytes.get(target, 0) + count
            now = time.monotonic()
            if now - self._last < self.interval:
                return None
            self._last = now
            return dict(self._bytes)


class HumanReporter:
    """One line per step on stderr; byte counts at most every ``interval`` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 2.0) -> None:
        self.stream = stream or sys.stderr
        self._tally = _ByteTally(interval)
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def event(self, kind: str, /, **fields: Any) -> None:
        if kind == "phase":
            self._line(f"==> {fields.pop('name')}" + "".join(f" {k}={v}" for k, v in fields.items()))
        elif kind == "target":
            detail = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("name", "phase"))
            self._line(f"    {fields['phase']:<9} {fields['name']}  {detail}".rstrip())
        elif kind == "warning":
            self._line(f"warning: {fields['message']}")
        elif kind == "retained":
            self._line(f"    retained  {fields['objects']} objects until {fields['until']} (object lock)")
        # "done" and "result": the command prints the result itself

    def bytes_done(self, target: str, count: int) -> None:
        snapshot = self._tally.add(target, count)
        if snapshot is not None:
            text = ", ".join(f"{t} {human_size(n)}" for t, n in sorted(snapshot.items()))
            self._line(f"    exported  {text}")


class JsonReporter:
    """One JSON object per event on stdout (``{"event": kind, ...}``)."""

    def __init__(self, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.stream = stream or sys.stdout
        self._tally = _ByteTally(interval)
        self._lock = threading.Lock()

    def event(self, kind: str, /, **fields: Any) -> None:
        with self._lock:
            self.stream.write(json.dumps({"event": kind, **fields}, default=str) + "\n")
            self.stream.flush()

    def bytes_done(self, target: str, count: int) -> None:
        snapshot = self._tally.add(target, count)
        if snapshot is not None:
            self.event("progress", bytes=snapshot)
