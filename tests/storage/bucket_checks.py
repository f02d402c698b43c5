"""Checks the object-store backends' own tests share (Azure, GCS, and later S3):
a long stream of unknown length, and two writers racing to create one name."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from tests.storage.conformance import read_all
from txbackup.errors import AlreadyExistsError
from txbackup.storage.base import Storage, Writer, save_bytes

MIB = 1 << 20


def write_stream(writer: Writer, mib: int) -> str:
    """Write ``mib`` MiB in half-random pieces (nothing compresses or dedups them);
    the sha256 of what was sent."""
    sent = hashlib.sha256()
    for i in range(mib):
        piece = os.urandom(MIB // 2) + bytes([i % 256]) * (MIB // 2)
        sent.update(piece)
        writer.write(piece)
    return sent.hexdigest()


def race_two_creators(storage: Storage, name: str, size: int) -> None:
    """Two writers create ``name`` (if_absent) at once, each ``size`` bytes: exactly
    one wins, the other gets one line of AlreadyExistsError; the object is the winner's."""
    barrier = threading.Barrier(2)
    outcome: dict[int, str] = {}

    def write(i: int) -> None:
        try:
            with storage.open_write(name, if_absent=True) as writer:
                writer.write(bytes([i]) * size)
                barrier.wait(30)
                writer.commit()
            outcome[i] = "won"
        except AlreadyExistsError as exc:
            assert "\n" not in str(exc) and f"{name}: already exists" in str(exc)
            outcome[i] = "lost"

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcome.values()) == ["lost", "won"], outcome
    (winner,) = [i for i, o in outcome.items() if o == "won"]
    assert read_all(storage, name) == bytes([winner]) * size
    with pytest.raises(AlreadyExistsError):  # and once more, after the fact
        save_bytes(storage, name, b"late", if_absent=True)
