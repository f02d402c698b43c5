"""The in-memory backend passes the suite, and its fault injector does what it says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.storage.conformance import Backend, StorageConformance, read_all
from txbackup.errors import PermanentStorageError, TransientStorageError
from txbackup.storage.base import Writer, list_names, save_bytes
from txbackup.storage.memory import FaultInjector, MemoryStorage, MemoryWriter


def kill(writer: Writer) -> None:
    assert isinstance(writer, MemoryWriter)
    writer.die()


class TestMemoryConformance(StorageConformance):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield Backend(MemoryStorage(), kill=kill)


def test_the_nth_call_fails_once_and_calls_are_counted() -> None:
    faults = FaultInjector()
    storage = MemoryStorage(faults=faults)
    save_bytes(storage, "a", b"1")
    faults.add("stat", "transient", nth=2)
    assert storage.stat("a") is not None
    message = r"^storage memory://test: stat a: injected transient fault$"
    with pytest.raises(TransientStorageError, match=message):
        storage.stat("a")
    assert storage.stat("a") is not None  # fired once
    assert faults.calls["stat"] == 3 and faults.calls["commit"] == 1


def test_a_pattern_fault_hits_only_matching_names_until_spent() -> None:
    faults = FaultInjector()
    storage = MemoryStorage(faults=faults)
    faults.add("commit", "permanent", pattern="sets/*/manifest.json", times=2)
    save_bytes(storage, "sets/s1/a.zst", b"data")
    for _ in range(2):
        with pytest.raises(PermanentStorageError):
            save_bytes(storage, "sets/s1/manifest.json", b"{}", if_absent=True)
    assert list_names(storage) == ["sets/s1/a.zst"]  # a failed commit publishes nothing
    assert list(storage.temporaries(-60)) == []  # and aborts its upload
    save_bytes(storage, "sets/s1/manifest.json", b"{}", if_absent=True)
    assert list_names(storage) == ["sets/s1/a.zst", "sets/s1/manifest.json"]


def test_a_read_cut_short_and_a_read_reset_midway() -> None:
    faults = FaultInjector()
    storage = MemoryStorage(faults=faults)
    save_bytes(storage, "a", bytes(range(256)) * 100)
    faults.add("read", "short_read", nth=2)
    with storage.open_read("a") as stream:
        assert len(stream.read(1000)) == 1000
        assert stream.read(1000) == b""  # the connection was cut: an early EOF
    faults.add("read", "transient", nth=4)
    with storage.open_read("a") as stream, pytest.raises(TransientStorageError, match="read a"):
        stream.read(10)
        stream.read(10)
    assert read_all(storage, "a") == bytes(range(256)) * 100


def test_a_commit_whose_answer_is_lost_lands_then_fails() -> None:
    faults = FaultInjector()
    storage = MemoryStorage(faults=faults)
    faults.add("commit", "transient_after")
    with pytest.raises(TransientStorageError):
        save_bytes(storage, "m", b"{}", if_absent=True)
    assert read_all(storage, "m") == b"{}"
