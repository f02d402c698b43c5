"""The retry wrapper: transparent (it passes the suite over a flaky store) and
retrying only what may be retried."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from tests.storage.conformance import Backend, StorageConformance, read_all
from tests.storage.test_memory import kill
from txbackup.errors import AlreadyExistsError, PermanentStorageError, TransientStorageError
from txbackup.storage import open_storage
from txbackup.storage.base import ObjectInfo, copy_stream, list_names, save_bytes
from txbackup.storage.memory import FaultInjector, MemoryStorage
from txbackup.storage.retry import RetryPolicy, RetryStorage


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def flaky(
    faults: FaultInjector | None = None, attempts: int = 4
) -> tuple[RetryStorage, FaultInjector, Sleeps]:
    """A retrying in-memory store whose backoff records its sleeps instead of sleeping."""
    faults = faults or FaultInjector()
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=attempts, sleep=sleeps)
    return RetryStorage(MemoryStorage(faults=faults), policy), faults, sleeps


class TestRetryConformance(StorageConformance):
    """Every idempotent call fails transiently now and then: the suite cannot tell."""

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        faults = FaultInjector()
        for operation, every in [("stat", 3), ("open_read", 4), ("read", 5), ("iterate", 3), ("remove", 2),
                                 ("remove_prefix", 2), ("temporaries", 2), ("remove_temporary", 2),
                                 ("open_write", 3)]:  # fmt: skip
            faults.add(operation, "transient", every=every, times=None)  # type: ignore[arg-type]
        storage, _, _ = flaky(faults)
        yield Backend(storage, kill=kill)


def test_a_transient_error_is_retried_with_capped_jittered_backoff() -> None:
    storage, faults, sleeps = flaky(attempts=6)
    save_bytes(storage, "a", b"1")
    faults.add("stat", "transient", times=5)
    assert storage.stat("a") is not None
    assert faults.calls["stat"] == 6
    policy = storage.policy
    assert len(sleeps) == 5
    assert all(0 <= s <= min(policy.cap_s, policy.base_s * 2**i) for i, s in enumerate(sleeps))


def test_retries_give_up_and_permanent_errors_are_not_retried() -> None:
    storage, faults, sleeps = flaky(attempts=3)
    faults.add("remove", "transient", times=None)
    with pytest.raises(TransientStorageError, match="remove a: injected transient fault"):
        storage.remove("a")
    assert faults.calls["remove"] == 3 and len(sleeps) == 2
    faults.add("stat", "permanent")
    with pytest.raises(PermanentStorageError):
        storage.stat("a")
    assert faults.calls["stat"] == 1 and len(sleeps) == 2


class _BrokenListing(MemoryStorage):
    """A listing whose connection resets after two entries, the first time."""

    broken = False

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        for i, info in enumerate(super().iterate(prefix)):
            if i == 2 and not self.broken:
                self.broken = True
                raise TransientStorageError("storage memory://test: list /: connection reset")
            yield info


def test_a_listing_broken_midway_resumes_without_duplicates() -> None:
    inner = _BrokenListing()
    for name in ["a", "b", "c", "d"]:
        save_bytes(inner, name, b".")
    storage = RetryStorage(inner, RetryPolicy(sleep=Sleeps()))
    assert list_names(storage) == ["a", "b", "c", "d"]
    assert inner.broken


@pytest.mark.parametrize(("offset", "length"), [(0, None), (1000, (2 << 20) + 7), (25_000, None)])
def test_a_read_reset_midway_resumes_at_the_offset_reached(offset: int, length: int | None) -> None:
    storage, faults, _ = flaky()
    data = bytes(range(256)) * (12 << 10)  # 3 MiB: several reads of CHUNK
    save_bytes(storage, "a", data)
    faults.add("read", "transient", nth=2)
    faults.add("read", "transient", nth=4)
    with storage.open_read("a", offset, length) as stream:
        got = b"".join(iter(lambda: stream.read(4096), b""))
    end = None if length is None else offset + length
    assert got == data[offset:end]
    assert faults.calls["open_read"] == 3  # the first open, then one per reset


def test_save_bytes_replays_a_whole_write_whose_commit_failed() -> None:
    storage, faults, _ = flaky()
    faults.add("commit", "transient")
    faults.add("write", "transient")
    assert save_bytes(storage, "m", b"{}").size == 2
    assert faults.calls["commit"] == 2 and read_all(storage, "m") == b"{}"


def test_an_if_absent_commit_that_landed_before_its_answer_was_lost_succeeds() -> None:
    storage, faults, _ = flaky()
    faults.add("commit", "transient_after")
    assert save_bytes(storage, "sets/s1/manifest.json", b"ours", if_absent=True).size == 4
    # but a real conflict stays one, even after an uncertain attempt
    save_bytes(storage, "sets/s2/manifest.json", b"theirs")
    faults.add("commit", "transient")
    with pytest.raises(AlreadyExistsError):
        save_bytes(storage, "sets/s2/manifest.json", b"ours", if_absent=True)
    assert read_all(storage, "sets/s2/manifest.json") == b"theirs"


def test_a_streamed_write_is_not_replayed() -> None:
    storage, faults, sleeps = flaky()
    faults.add("write", "transient", nth=2)
    with pytest.raises(TransientStorageError, match="write big"):
        copy_stream(storage, "big", io.BytesIO(b"x" * (3 << 20)))
    assert sleeps == [] and list_names(storage) == [] and list(storage.temporaries(-60)) == []


def test_open_storage_wraps_every_backend_in_retries(tmp_path: object) -> None:
    storage = open_storage(str(tmp_path))
    assert isinstance(storage, RetryStorage) and storage.describe() == str(tmp_path)
