"""Who runs this process, and whether the process that left a record is gone.

Storage locks, catalog rows of sets being made and private temporary folders
record their owner: user, host, pid and the process's start time. A pid alone
is not enough: pids are reused, so a record is only matched to a live process
when its start time (Linux: clock ticks since boot, ``/proc/PID/stat``) is the
same. And a pid means something only on the machine, boot and pid namespace
that issued it (``machine``): a record from elsewhere is never judged by its
pid; the storage lock's heartbeat covers those.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from txbackup.safepaths import printable

PID_MAX = 2**22
"""Linux never hands out larger pids (``kernel.pid_max`` is at most 2^22)."""


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks since boot) of ``pid`` from /proc, None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """When ``pid`` started (ticks since boot), or None where /proc cannot tell."""
    state = process_state(pid)
    return None if state is None else state[1]


@functools.cache
def machine_id() -> str | None:
    """This boot of this machine, and this pid namespace: equal ids mean comparable pids."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot else None


def machine_tag() -> str:
    """A short, file-name-safe form of ``machine_id()`` (``x`` when unknown)."""
    machine = machine_id()
    return hashlib.sha256(machine.encode()).hexdigest()[:8] if machine else "x"


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return str(os.getuid())


def process_gone(pid: int, started: int | None) -> str | None:
    """Why the local process ``pid`` (started at ``started``) no longer runs, or None if it may."""
    if not 0 < pid <= PID_MAX:
        return f"pid {pid} is not a process"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} is gone"
    except PermissionError:
        pass  # it exists, owned by someone else
    state = process_state(pid)
    if state is None:
        return None
    if state[0] in ("Z", "X"):
        return f"process {pid} has exited"
    if started is not None and state[1] != started:
        return f"process {pid} is gone (its pid now belongs to another process)"
    return None


@dataclass(frozen=True)
class Owner:
    """The process behind a lock, a running set or a temporary folder."""

    user: str
    host: str
    pid: int
    started: int | None = None
    machine: str | None = None

    @classmethod
    def current(cls) -> Owner:
        return cls(_user(), socket.gethostname(), os.getpid(), process_start(os.getpid()), machine_id())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Owner:
        """Parse an owner read from storage or the catalog (untrusted); ValueError if malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("owner must be an object")
        user, host, pid = data.get("user"), data.get("host"), data.get("pid")
        started, machine = data.get("started"), data.get("machine")
        if not isinstance(user, str) or not isinstance(host, str):
            raise ValueError("owner user and host must be strings")
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
            raise ValueError(f"owner pid must be an integer from 1 to {PID_MAX}")
        if started is not None and (not isinstance(started, int) or isinstance(started, bool) or started < 0):
            raise ValueError("owner started must be a non-negative integer")
        if machine is not None and not isinstance(machine, str):
            raise ValueError("owner machine must be a string")
        return cls(user[:100], host[:255], pid, started, machine)

    @property
    def local(self) -> bool:
        """Whether this owner's pid can be checked here (same host, boot and pid namespace)."""
        here = machine_id()
        return here is not None and self.machine == here and self.host == socket.gethostname()

    def gone(self) -> str | None:
        """Why the owner's process is known to be gone, or None (alive, or not checkable here)."""
        if not self.local:
            return None
        return process_gone(self.pid, self.started)

    def describe(self) -> str:
        return f"pid {self.pid} of {printable(self.user)} on {printable(self.host)}"
