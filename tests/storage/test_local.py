"""The storage interface on a local folder: atomic saves, names, errors."""

from __future__ import annotations

import errno
import io
import os

import pytest

from txbackup.errors import StorageError, UsageError
from txbackup.storage import LocalStorage, StreamSaver, open_storage
from txbackup.storage.local import TMP_PREFIX


def fill_disk(monkeypatch: pytest.MonkeyPatch, root: str, limit: int = 0) -> None:
    """Make writes to files being saved under ``root`` fail with ENOSPC once
    ``limit`` bytes have been written (a full disk, without a tiny filesystem)."""
    real_write = os.write
    written = 0

    def write(fd: int, data: bytes) -> int:
        nonlocal written
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith(root) and TMP_PREFIX in target:
            if written + len(data) > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def all_files(root: str) -> list[str]:
    """Every file under ``root``, temporary ones included."""
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )


class FailingStream(io.RawIOBase):
    """A source that fails after some bytes (a producer dying mid-stream)."""

    def __init__(self, good: bytes) -> None:
        self._good = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._good:
            raise RuntimeError("producer died")
        n = len(self._good)
        memoryview(buffer)[:n] = self._good
        self._good = b""
        return n


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(str(tmp_path / "repo"))


def test_save_load_stat_round_trip(storage):
    data = os.urandom(3 * (1 << 20) + 17)
    assert storage.save("sets/a/t/x.zst", io.BytesIO(data)) == len(data)
    assert storage.stat("sets/a/t/x.zst") == len(data)
    with storage.load("sets/a/t/x.zst") as f:
        assert f.read() == data
    assert storage.stat("sets/a/t/missing") is None
    assert storage.stat("sets/a") is None  # a folder is not a file


def test_save_fsyncs_the_file_then_its_folder(storage, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    storage.save("sets/a/manifest.json", io.BytesIO(b"{}"))
    folder = os.path.join(storage.root, "sets", "a")
    assert TMP_PREFIX in synced[-2] and synced[-1] == folder
    assert os.path.dirname(folder) in synced  # a new folder is made durable in its parent


def test_save_replaces_existing_file(storage):
    storage.save("f", io.BytesIO(b"old"))
    storage.save("f", io.BytesIO(b"new"))
    with storage.load("f") as f:
        assert f.read() == b"new"


def test_list_by_prefix_sorted_and_without_temporary_files(storage):
    for name in ["sets/b/manifest.json", "sets/a/t/x.zst", "sets/a/manifest.json", "catalog.db"]:
        storage.save(name, io.BytesIO(b"."))
    open(os.path.join(storage.root, "sets", "a", TMP_PREFIX + "123"), "wb").close()
    assert storage.list("sets/") == ["sets/a/manifest.json", "sets/a/t/x.zst", "sets/b/manifest.json"]
    assert storage.list("sets/a/") == ["sets/a/manifest.json", "sets/a/t/x.zst"]
    assert storage.list("sets/b") == ["sets/b/manifest.json"]
    assert storage.list("") == [
        "catalog.db",
        "sets/a/manifest.json",
        "sets/a/t/x.zst",
        "sets/b/manifest.json",
    ]
    assert storage.list("nothing/") == []


def test_list_of_a_storage_not_created_yet_is_empty(tmp_path):
    assert LocalStorage(str(tmp_path / "none")).list("sets/") == []


def test_remove_and_remove_prefix(storage):
    for name in ["sets/a/manifest.json", "sets/a/t/x.zst", "sets/ab/manifest.json"]:
        storage.save(name, io.BytesIO(b"."))
    storage.remove("sets/a/manifest.json")
    storage.remove("sets/a/manifest.json")  # idempotent
    storage.remove_prefix("sets/a/")
    storage.remove_prefix("sets/a/")  # idempotent
    assert storage.list("") == ["sets/ab/manifest.json"]
    assert not os.path.exists(os.path.join(storage.root, "sets", "a"))
    with pytest.raises(StorageError, match="not a folder"):
        storage.remove_prefix("sets/ab")


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "sets/../../x", "a//b", "a/./b", "a\\b"])
def test_bad_names_are_refused(storage, name):
    with pytest.raises(StorageError, match="must be a relative path"):
        storage.save(name, io.BytesIO(b"."))
    with pytest.raises(StorageError):
        storage.stat(name)
    assert not os.path.exists(storage.root)


def test_load_of_missing_name_names_it(storage):
    with pytest.raises(StorageError, match=r"repo: sets/x/manifest.json not found"):
        storage.load("sets/x/manifest.json")


def test_failing_source_leaves_nothing_and_keeps_previous_content(storage):
    storage.save("f", io.BytesIO(b"previous"))
    with pytest.raises(RuntimeError, match="producer died"):
        storage.save("f", io.BufferedReader(FailingStream(b"partial")))
    with storage.load("f") as f:
        assert f.read() == b"previous"
    assert all_files(storage.root) == ["f"]


def test_full_disk_is_a_one_line_storage_error_and_leaves_no_file(storage, monkeypatch):
    fill_disk(monkeypatch, storage.root, limit=1 << 20)
    with pytest.raises(StorageError) as err:
        storage.save("sets/a/t/big.zst", io.BytesIO(b"x" * (3 << 20)))
    assert str(err.value) == (
        f"storage {storage.root}: no space left on device while writing sets/a/t/big.zst"
    )
    assert storage.stat("sets/a/t/big.zst") is None
    assert all_files(storage.root) == []


def test_permission_denied_names_the_storage_and_the_file(storage, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(StorageError, match=r"repo: permission denied while writing sets/m.json$"):
        storage.save("sets/m.json", io.BytesIO(b"{}"))


def test_stream_saver_commit_and_abort(storage):
    saver = StreamSaver(storage, "a/data")
    for _ in range(5):
        saver.write(b"y" * 300_000)  # more than a pipe buffer: the saver thread keeps up
    assert saver.commit() == 1_500_000
    assert storage.stat("a/data") == 1_500_000

    aborted = StreamSaver(storage, "a/other")
    aborted.write(b"partial")
    aborted.abort()
    assert storage.list("a/") == ["a/data"]
    assert all_files(storage.root) == ["a/data"]


def test_stream_saver_write_raises_the_storage_error(storage, monkeypatch):
    fill_disk(monkeypatch, storage.root)
    saver = StreamSaver(storage, "a/data")
    with pytest.raises(StorageError, match="no space left on device while writing a/data"):
        for _ in range(100):
            saver.write(b"z" * (1 << 20))
    saver.abort()
    assert all_files(storage.root) == []


def test_open_storage_paths_and_urls(tmp_path):
    assert open_storage(str(tmp_path)).describe() == str(tmp_path)
    assert open_storage(f"file://{tmp_path}/x%20y").describe() == f"{tmp_path}/x y"
    assert open_storage("relative/dir").describe() == os.path.abspath("relative/dir")
    with pytest.raises(UsageError, match=r"storage s3://bucket/p: unsupported scheme 's3'"):
        open_storage("s3://bucket/p")
    with pytest.raises(UsageError, match="file:///absolute/path"):
        open_storage("file://host/path")
    with pytest.raises(UsageError, match="empty"):
        open_storage("")


# -- symbolic links are never followed out of the root ------------------------------------------


@pytest.fixture
def outside(tmp_path):
    """A folder outside the storage holding a precious file (what an attacker points at)."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "manifest.json").write_bytes(b"precious")
    (folder / "deep").mkdir()
    (folder / "deep" / "x.zst").write_bytes(b"precious too")
    return folder


def test_a_symlinked_set_folder_is_not_listed_read_or_deleted_through(storage, outside, caplog):
    storage.save("sets/real/manifest.json", io.BytesIO(b"{}"))
    os.symlink(outside, os.path.join(storage.root, "sets", "evil"))

    assert storage.list("sets/") == ["sets/real/manifest.json"]
    assert "sets/evil is a symbolic link: ignored" in caplog.text
    message = r"sets/evil is a symbolic link; refusing to follow it"
    with pytest.raises(StorageError, match=message):
        storage.load("sets/evil/manifest.json")
    with pytest.raises(StorageError, match=message):
        storage.stat("sets/evil/manifest.json")
    with pytest.raises(StorageError, match=message):
        storage.list("sets/evil/")
    with pytest.raises(StorageError, match=message):
        storage.save("sets/evil/manifest.json", io.BytesIO(b"overwritten"))
    with pytest.raises(StorageError, match=message):
        storage.remove("sets/evil/manifest.json")
    with pytest.raises(StorageError, match=message):
        storage.remove_prefix("sets/evil/deep/")

    storage.remove_prefix("sets/evil/")  # removes the link itself, never what it points to
    assert not os.path.lexists(os.path.join(storage.root, "sets", "evil"))
    assert (outside / "manifest.json").read_bytes() == b"precious"
    assert (outside / "deep" / "x.zst").read_bytes() == b"precious too"
    assert storage.list("") == ["sets/real/manifest.json"]


def test_a_symlinked_top_folder_is_refused(storage, outside):
    os.makedirs(storage.root)
    os.symlink(outside, os.path.join(storage.root, "sets"))
    with pytest.raises(StorageError, match="sets is a symbolic link"):
        storage.list("sets/")
    with pytest.raises(StorageError, match="sets is a symbolic link"):
        storage.remove_prefix("sets/deep/")
    assert storage.list("") == []  # the link is skipped
    assert sorted(os.listdir(outside)) == ["deep", "manifest.json"]


def test_a_symlinked_file_is_not_read_listed_or_replaced_through(storage, outside):
    storage.save("sets/a/x.zst", io.BytesIO(b"mine"))
    link = os.path.join(storage.root, "sets", "a", "manifest.json")
    os.symlink(outside / "manifest.json", link)
    assert storage.list("sets/") == ["sets/a/x.zst"]
    for operation in (storage.stat, storage.load):
        with pytest.raises(StorageError, match=r"sets/a/manifest\.json is a symbolic link; refusing"):
            operation("sets/a/manifest.json")
    storage.save("sets/a/manifest.json", io.BytesIO(b"new"))  # replaces the link, not its target
    assert not os.path.islink(link)
    storage.remove("sets/a/manifest.json")
    os.symlink(outside / "manifest.json", link)
    storage.remove("sets/a/manifest.json")  # the link goes
    assert not os.path.lexists(link)
    assert (outside / "manifest.json").read_bytes() == b"precious"


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_blocking(storage):
    storage.save("sets/a/x.zst", io.BytesIO(b"."))
    os.mkfifo(os.path.join(storage.root, "sets", "a", "manifest.json"))
    with pytest.raises(StorageError, match=r"sets/a/manifest\.json is not a regular file"):
        storage.load("sets/a/manifest.json")
    assert storage.stat("sets/a/manifest.json") is None
    assert storage.list("sets/") == ["sets/a/x.zst"]


@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "\udc80", "x" * 300, "a/" * 3000 + "b"])
def test_hostile_names_are_refused_in_one_line(storage, name):
    with pytest.raises(StorageError) as err:
        storage.save(name, io.BytesIO(b"."))
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    with pytest.raises(StorageError):
        storage.stat(name)


# -- private files --------------------------------------------------------------------------------


@pytest.fixture(params=[0o000, 0o022])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_files_are_0600_and_folders_0700_whatever_the_umask(tmp_path, umask):
    storage = LocalStorage(str(tmp_path / "new" / "repo"))
    storage.save("sets/a/t/x.zst", io.BytesIO(b"secret rows"))
    StreamSaver(storage, "sets/a/manifest.json").commit()
    for folder in ["new", "new/repo", "new/repo/sets", "new/repo/sets/a", "new/repo/sets/a/t"]:
        assert oct(os.stat(tmp_path / folder).st_mode & 0o777) == oct(0o700), folder
    for file in ["sets/a/t/x.zst", "sets/a/manifest.json"]:
        assert oct(os.stat(os.path.join(storage.root, file)).st_mode & 0o777) == oct(0o600), file
