"""The one suite every storage backend passes (restic's backend/test, kopia's blobtesting).

A backend joins with a subclass that provides the ``backend`` fixture, a
fresh empty storage (see ``test_local.py``)::

    class TestLocal(StorageConformance):
        @pytest.fixture
        def backend(self, tmp_path: Path) -> Iterator[Backend]:
            yield Backend(LocalStorage(str(tmp_path / "repo")))

What a server cannot do is declared in ``Capabilities``, never skipped silently.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from txbackup.errors import AlreadyExistsError, NotFoundError, StorageError
from txbackup.storage.base import (
    CHUNK,
    ObjectInfo,
    Storage,
    Writer,
    copy_stream,
    list_names,
    load_bytes,
    save_bytes,
)


@dataclass(frozen=True)
class Capabilities:
    """What the backend (or the server behind it) guarantees; the defaults are the contract."""

    if_absent_atomic: bool = True
    """Two concurrent ``if_absent`` writers: exactly one wins (False: a server that
    checks existence before the upload but not at its completion)."""
    clock_skew_s: float = 5.0
    """How far an object's ``mtime`` may be from this machine's clock (server clock,
    second-granular timestamps)."""
    big_object_mib: int = 20
    """The size of the streamed big object."""
    temporaries_listed: bool = True
    """A killed writer's leftovers are listed by ``temporaries`` (False: a server
    that cannot list incomplete uploads)."""


def _leave(writer: Writer) -> None:
    """What a killed process does to its writer: nothing (no abort, no commit)."""


@dataclass
class Backend:
    """A fresh, empty storage under test and what it can do."""

    storage: Storage
    capabilities: Capabilities = field(default_factory=Capabilities)
    kill: Callable[[Writer], None] = _leave
    """Drop a writer the way a killed process would (release local resources, no abort)."""


def read_all(storage: Storage, name: str, offset: int = 0, length: int | None = None) -> bytes:
    with storage.open_read(name, offset, length) as stream:
        parts = []
        while chunk := stream.read(CHUNK):
            parts.append(chunk)
        return b"".join(parts)


def race(storage: Storage, name: str, writers: int) -> dict[int, str]:
    """``writers`` threads upload to ``name`` with ``if_absent`` and commit at once;
    each one's outcome: "won", "lost" (AlreadyExistsError) or the unexpected error."""
    barrier = threading.Barrier(writers)
    outcome: dict[int, str] = {}

    def write(i: int) -> None:
        try:
            with storage.open_write(name, if_absent=True) as writer:
                writer.write(f"writer {i}".encode() * 1000)
                barrier.wait(timeout=30)  # every upload complete before any commit
                writer.commit()
            outcome[i] = "won"
        except AlreadyExistsError:
            outcome[i] = "lost"
        except BaseException as exc:  # reported by the caller's assertion
            outcome[i] = repr(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome


HOSTILE_NAMES = [
    "",
    "/etc/passwd",
    "../x",
    "sets/../../x",
    "a//b",
    "a/./b",
    "a/",
    "a\\b",
    "a\x00b",
    "a\nb",
    "\udc80",
    "x" * 300,
    "a/" * 3000 + "b",
    "sets/.txbackup-tmp-1234",
]

SPECIAL = "sets/a b/ü é#%+=,@~;!$&'()[]{}^`.zst"
"""Characters a storage name may hold (check_name allows them): spaces, non-ASCII,
and what URLs, shells and query strings treat specially."""


class StorageConformance:
    """The contract of ``txbackup.storage.base.Storage``, one test per clause."""

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        raise NotImplementedError("a backend's test module provides this fixture")

    # -- write, commit, read back ---------------------------------------------------------------

    def test_write_commit_read_back(self, backend: Backend) -> None:
        storage = backend.storage
        data = os.urandom(300_000)
        before = time.time()
        with storage.open_write("sets/s1/pg/a.dump.zst") as writer:
            for start in range(0, len(data), 65_536):
                assert writer.write(memoryview(data)[start : start + 65_536]) == len(
                    data[start : start + 65_536]
                )
            info = writer.commit()
        assert (info.name, info.size) == ("sets/s1/pg/a.dump.zst", len(data))
        skew = backend.capabilities.clock_skew_s
        assert before - skew <= info.mtime <= time.time() + skew
        stat = storage.stat("sets/s1/pg/a.dump.zst")
        assert stat is not None and (stat.name, stat.size) == (info.name, info.size)
        assert abs(stat.mtime - info.mtime) <= skew
        assert info.checksum is None or stat.checksum in (None, info.checksum)
        # a SHA-256 the store keeps is that of the bytes stored, or absent: never another
        assert stat.sha256 in (None, hashlib.sha256(data).hexdigest())
        assert read_all(storage, "sets/s1/pg/a.dump.zst") == data

    def test_nothing_is_visible_before_commit(self, backend: Backend) -> None:
        storage = backend.storage
        with storage.open_write("sets/s1/manifest.json") as writer:
            writer.write(b"{}")
            assert storage.stat("sets/s1/manifest.json") is None
            assert list_names(storage) == []
            with pytest.raises(NotFoundError):
                read_all(storage, "sets/s1/manifest.json")
            writer.commit()
        assert list_names(storage) == ["sets/s1/manifest.json"]

    def test_an_empty_object(self, backend: Backend) -> None:
        storage = backend.storage
        with storage.open_write("empty") as writer:
            assert writer.commit().size == 0
        info = storage.stat("empty")
        assert info is not None and info.size == 0
        assert read_all(storage, "empty") == b""
        assert read_all(storage, "empty", 0, 10) == b""
        assert read_all(storage, "empty", 5) == b""

    def test_a_commit_replaces_the_previous_version(self, backend: Backend) -> None:
        storage = backend.storage
        save_bytes(storage, "locks/l.json", b"old and longer")
        info = save_bytes(storage, "locks/l.json", b"new")
        assert read_all(storage, "locks/l.json") == b"new"
        assert info.size == 3 and list_names(storage) == ["locks/l.json"]
        stat = storage.stat("locks/l.json")
        assert stat is not None and stat.sha256 in (None, hashlib.sha256(b"new").hexdigest())

    def test_a_writer_is_used_once(self, backend: Backend) -> None:
        storage = backend.storage
        with storage.open_write("x") as writer:
            writer.write(b"1")
            writer.commit()
            with pytest.raises(StorageError):
                writer.write(b"2")
            with pytest.raises(StorageError):
                writer.commit()
            writer.abort()  # a no-op after commit
        assert read_all(storage, "x") == b"1"

    def test_helpers_save_copy_load(self, backend: Backend) -> None:
        storage = backend.storage
        import io

        data = os.urandom(3 * CHUNK + 5)
        assert copy_stream(storage, "c", io.BytesIO(data)).size == len(data)
        assert load_bytes(storage, "c", len(data)) == data
        with pytest.raises(StorageError, match="over the limit"):
            load_bytes(storage, "c", len(data) - 1)
        with pytest.raises(NotFoundError):
            load_bytes(storage, "missing", 10)

    # -- abort: nothing left -----------------------------------------------------------------------

    def test_abort_leaves_nothing(self, backend: Backend) -> None:
        storage = backend.storage
        save_bytes(storage, "sets/s1/a", b"previous")
        writer = storage.open_write("sets/s1/a")
        writer.write(b"partial" * 1000)
        writer.abort()
        writer.abort()  # idempotent
        with pytest.raises(StorageError):
            writer.write(b"more")
        with pytest.raises(StorageError):
            writer.commit()
        assert read_all(storage, "sets/s1/a") == b"previous"
        assert list_names(storage) == ["sets/s1/a"]
        assert list(storage.temporaries(-3600)) == []

    def test_an_exception_inside_with_leaves_nothing(self, backend: Backend) -> None:
        storage = backend.storage
        with pytest.raises(RuntimeError, match="producer died"), storage.open_write("sets/s1/b") as writer:
            writer.write(b"half")
            raise RuntimeError("producer died")
        with storage.open_write("sets/s1/c") as writer:
            writer.write(b"never committed")  # leaving the block without commit aborts
        assert list_names(storage) == []
        assert list(storage.temporaries(-3600)) == []

    # -- if_absent: the atomic commit of a set ---------------------------------------------------

    def test_if_absent_creates_a_missing_name(self, backend: Backend) -> None:
        info = save_bytes(backend.storage, "sets/s1/manifest.json", b"{}", if_absent=True)
        assert info.size == 2 and read_all(backend.storage, "sets/s1/manifest.json") == b"{}"

    def test_if_absent_never_overwrites(self, backend: Backend) -> None:
        storage = backend.storage
        save_bytes(storage, "sets/s1/manifest.json", b"first")
        with pytest.raises(AlreadyExistsError) as err:  # noqa: SIM117  # the with must end inside
            with storage.open_write("sets/s1/manifest.json", if_absent=True) as writer:
                writer.write(b"second")
                writer.commit()
        message = str(err.value)
        assert "sets/s1/manifest.json" in message and "\n" not in message
        assert message.startswith(f"storage {storage.describe()}: ")
        with pytest.raises(AlreadyExistsError):
            save_bytes(storage, "sets/s1/manifest.json", b"third", if_absent=True)
        assert read_all(storage, "sets/s1/manifest.json") == b"first"
        assert list_names(storage) == ["sets/s1/manifest.json"]
        assert list(storage.temporaries(-3600)) == []

    def test_concurrent_if_absent_writers_exactly_one_wins(self, backend: Backend) -> None:
        if not backend.capabilities.if_absent_atomic:
            pytest.skip("this server does not make concurrent conditional creates atomic")
        storage = backend.storage
        writers = 6
        for round in range(20):  # a check-then-write race shows up in some rounds only
            name = f"sets/s{round}/manifest.json"
            outcome = race(storage, name, writers)
            assert sorted(outcome.values()) == ["lost"] * (writers - 1) + ["won"], outcome
            (winner,) = [i for i, o in outcome.items() if o == "won"]
            assert read_all(storage, name) == f"writer {winner}".encode() * 1000
        assert list(storage.temporaries(-3600)) == []

    # -- ranged reads ------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("offset", "length", "expected"),
        [
            (0, None, slice(0, 1000)),
            (0, 1000, slice(0, 1000)),
            (10, 20, slice(10, 30)),
            (990, None, slice(990, 1000)),
            (990, 100, slice(990, 1000)),  # past the end: cut at the end
            (999, 1, slice(999, 1000)),
            (500, 0, slice(0, 0)),
            (1000, None, slice(0, 0)),  # at the end: nothing
            (5000, 10, slice(0, 0)),  # past the end: nothing
        ],
    )
    def test_ranged_reads(self, backend: Backend, offset: int, length: int | None, expected: slice) -> None:
        data = os.urandom(1000)
        save_bytes(backend.storage, "r", data)
        assert read_all(backend.storage, "r", offset, length) == data[expected]

    def test_missing_names(self, backend: Backend) -> None:
        storage = backend.storage
        save_bytes(storage, "sets/s1/a", b".")
        for name in ["sets/s1/missing", "sets/s1", "sets", "sets/s1/a/b", "nothing/at/all"]:
            assert storage.stat(name) is None, name  # a prefix is not an object
            with pytest.raises(NotFoundError) as err:
                read_all(storage, name)
            assert str(err.value).startswith(f"storage {storage.describe()}: ")
            assert name in str(err.value) and "\n" not in str(err.value)

    # -- listing ---------------------------------------------------------------------------------

    def test_iterate_by_prefix_sorted(self, backend: Backend) -> None:
        storage = backend.storage
        names = [
            "sets/b/manifest.json",
            "sets/a/t/x.zst",
            "sets/a/manifest.json",
            "sets/ab/manifest.json",
            "sets/a-b/manifest.json",
            "catalog/x",
            "top",
            "sets/a/t/deep/er/y",
            SPECIAL,
        ]
        for i, name in enumerate(names):
            save_bytes(storage, name, b"." * i)
        in_progress = storage.open_write("sets/a/in-progress")  # not committed: not listed
        in_progress.write(b"partial")
        try:
            everything = list(storage.iterate(""))
            assert [i.name for i in everything] == sorted(names)
            assert all(isinstance(i, ObjectInfo) and i.size == names.index(i.name) for i in everything)
            assert list_names(storage, "sets/") == sorted(n for n in names if n.startswith("sets/"))
            assert list_names(storage, "sets/a/") == [
                "sets/a/manifest.json",
                "sets/a/t/deep/er/y",
                "sets/a/t/x.zst",
            ]
            # a prefix not ending on '/' matches inside a segment
            assert list_names(storage, "sets/a") == sorted(
                ["sets/a/manifest.json", "sets/a/t/deep/er/y", "sets/a/t/x.zst", "sets/ab/manifest.json",
                 "sets/a-b/manifest.json", SPECIAL]
            )  # fmt: skip
            assert list_names(storage, "sets/a/t/x") == ["sets/a/t/x.zst"]
            assert list_names(storage, "to") == ["top"]
            assert list_names(storage, "top") == ["top"]
            assert list_names(storage, "nothing/") == []
            assert list_names(storage, "sets/zz") == []
            assert read_all(storage, SPECIAL) == b"." * names.index(SPECIAL)
        finally:
            in_progress.abort()

    def test_iterate_an_empty_storage(self, backend: Backend) -> None:
        assert list_names(backend.storage, "") == []
        assert list_names(backend.storage, "sets/") == []

    # -- removal ---------------------------------------------------------------------------------

    def test_remove_is_idempotent(self, backend: Backend) -> None:
        storage = backend.storage
        save_bytes(storage, "sets/s1/a", b".")
        save_bytes(storage, "sets/s1/b", b".")
        storage.remove("sets/s1/a")
        storage.remove("sets/s1/a")
        storage.remove("never/was")
        assert list_names(storage) == ["sets/s1/b"]

    def test_remove_prefix(self, backend: Backend) -> None:
        storage = backend.storage
        for name in ["sets/a/manifest.json", "sets/a/t/x.zst", "sets/a/t/u/v", "sets/ab/manifest.json", "a"]:
            save_bytes(storage, name, b".")
        storage.remove_prefix("sets/a/")
        storage.remove_prefix("sets/a/")  # idempotent
        storage.remove_prefix("nothing/here/")
        assert list_names(storage) == ["a", "sets/ab/manifest.json"]
        with pytest.raises(StorageError, match="not a folder"):
            storage.remove_prefix("sets/ab")
        assert list_names(storage) == ["a", "sets/ab/manifest.json"]

    # -- names -----------------------------------------------------------------------------------

    @pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[:30])
    def test_bad_names_are_refused_in_one_line(self, backend: Backend, name: str) -> None:
        storage = backend.storage
        operations: list[Callable[[], object]] = [
            lambda: storage.open_write(name),
            lambda: storage.open_read(name),
            lambda: storage.stat(name),
            lambda: storage.remove(name),
            lambda: list(storage.iterate(name + "/")),
            lambda: storage.remove_prefix(name + "/"),
        ]
        for operation in operations:
            with pytest.raises(StorageError) as err:
                operation()
            assert "\n" not in str(err.value) and len(str(err.value)) < 400
        assert list_names(storage) == []
        assert list(storage.temporaries(-3600)) == []

    # -- big objects -----------------------------------------------------------------------------

    def test_a_big_object_streamed_in_chunks(self, backend: Backend) -> None:
        storage = backend.storage
        mib = backend.capabilities.big_object_mib
        block = os.urandom(1 << 20)
        sent = hashlib.sha256()
        with storage.open_write("sets/s1/big.zst") as writer:
            for i in range(mib):
                piece = block[i:] + block[:i]  # every MiB different
                sent.update(piece)
                writer.write(piece)
            info = writer.commit()
        assert info.size == mib << 20
        got = hashlib.sha256()
        size = 0
        with storage.open_read("sets/s1/big.zst") as stream:
            while chunk := stream.read(CHUNK):
                got.update(chunk)
                size += len(chunk)
        assert (size, got.hexdigest()) == (mib << 20, sent.hexdigest())
        stat = storage.stat("sets/s1/big.zst")  # multipart on S3: its composite digest is not ours
        assert stat is not None and stat.sha256 in (None, sent.hexdigest())
        tail = read_all(storage, "sets/s1/big.zst", (mib << 20) - 10)
        assert len(tail) == 10

    # -- temporaries -----------------------------------------------------------------------------

    def test_a_killed_writer_leaves_a_removable_temporary(self, backend: Backend) -> None:
        if not backend.capabilities.temporaries_listed:
            pytest.skip("this server cannot list incomplete uploads")
        storage = backend.storage
        writer = storage.open_write("sets/s1/pg/a.dump.zst")
        writer.write(b"x" * 100_000)
        backend.kill(writer)
        assert list_names(storage) == []  # never listed as an object
        assert storage.stat("sets/s1/pg/a.dump.zst") is None
        assert list(storage.temporaries(3600)) == []  # too young to be a leftover
        (left,) = storage.temporaries(-3600)
        assert left.name.rpartition("/")[0] == "sets/s1/pg"  # in the object's folder
        assert abs(left.mtime - time.time()) <= backend.capabilities.clock_skew_s + 60
        storage.remove_temporary(left.name)
        storage.remove_temporary(left.name)  # idempotent
        assert list(storage.temporaries(-3600)) == []
        assert list_names(storage) == []
