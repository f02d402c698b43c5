"""The local folder backend: the conformance suite, plus what only a folder has
(fsync, full disk, symbolic links, FIFOs, file modes, hard-link if_absent)."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.storage.conformance import Backend, StorageConformance, read_all
from txbackup.errors import AlreadyExistsError, NotFoundError, PermanentStorageError, StorageError, UsageError
from txbackup.storage import LocalStorage, open_storage
from txbackup.storage.base import Writer, list_names, save_bytes
from txbackup.storage.local import TMP_PREFIX, LocalWriter


def kill(writer: Writer) -> None:
    """A killed process: its descriptors close, its temporary file stays."""
    assert isinstance(writer, LocalWriter)
    for fd in (writer._fd, writer._dir_fd):
        if fd is not None:
            os.close(fd)
    writer._fd = writer._dir_fd = None
    writer._done = True


class TestLocalConformance(StorageConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        yield Backend(LocalStorage(str(tmp_path / "repo")), kill=kill)


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


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(str(tmp_path / "repo"))


@pytest.mark.parametrize("if_absent", [False, True])
def test_a_commit_fsyncs_the_file_then_its_folder(storage, monkeypatch, if_absent):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save_bytes(storage, "sets/a/manifest.json", b"{}", if_absent=if_absent)
    folder = os.path.join(storage.root, "sets", "a")
    assert TMP_PREFIX in synced[-2] and synced[-1] == folder
    assert os.path.dirname(folder) in synced  # a new folder is made durable in its parent
    assert sorted(os.listdir(folder)) == ["manifest.json"]  # the temporary name is gone


def test_if_absent_is_a_hard_link_that_refuses_an_existing_name(storage, outside):
    """link(2) fails with EEXIST whatever is at the name (a file, a folder, a dangling or
    planted symbolic link): nothing is replaced and nothing written through a link."""
    save_bytes(storage, "sets/a/x", b".")
    os.mkdir(os.path.join(storage.root, "sets", "a", "folder"))
    os.symlink(outside / "manifest.json", os.path.join(storage.root, "sets", "a", "planted"))
    os.symlink(outside / "nothing", os.path.join(storage.root, "sets", "a", "dangling"))
    for name in ["x", "folder", "planted", "dangling"]:
        with pytest.raises(AlreadyExistsError, match=f"create sets/a/{name}: already exists$"):
            save_bytes(storage, f"sets/a/{name}", b"mine", if_absent=True)
    assert (outside / "manifest.json").read_bytes() == b"precious"
    assert not (outside / "nothing").exists()
    left = sorted(os.listdir(os.path.join(storage.root, "sets", "a")))
    assert left == ["dangling", "folder", "planted", "x"]


def test_if_absent_without_hard_links_is_refused_not_degraded(storage, monkeypatch):
    def no_links(*args, **kwargs):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(PermanentStorageError, match="no hard links here, needed for an atomic create"):
        save_bytes(storage, "sets/a/manifest.json", b"{}", if_absent=True)
    assert all_files(storage.root) == []


def test_remove_temporary_removes_only_temporaries(storage):
    save_bytes(storage, "sets/a/x", b".")
    hostile = ["../" + TMP_PREFIX + "x", "sets/../" + TMP_PREFIX + "x", TMP_PREFIX + "\n", "/" + TMP_PREFIX]
    for name in ["sets/a/x", "sets/a", *hostile]:
        with pytest.raises(StorageError):
            storage.remove_temporary(name)
    assert list_names(storage) == ["sets/a/x"]


def test_list_of_a_storage_not_created_yet_is_empty(tmp_path):
    assert list_names(LocalStorage(str(tmp_path / "none")), "sets/") == []


def test_load_of_missing_name_names_it(storage):
    with pytest.raises(NotFoundError, match=r"repo: read sets/x/manifest.json: not found$"):
        read_all(storage, "sets/x/manifest.json")


def test_full_disk_is_a_one_line_storage_error_and_leaves_no_file(storage, monkeypatch):
    fill_disk(monkeypatch, storage.root, limit=1 << 20)
    with pytest.raises(StorageError) as err:
        save_bytes(storage, "sets/a/t/big.zst", b"x" * (3 << 20))
    assert str(err.value) == (
        f"storage {storage.root}: write sets/a/t/big.zst: no space left on device"
    )
    assert storage.stat("sets/a/t/big.zst") is None
    assert all_files(storage.root) == []


def test_permission_denied_names_the_storage_and_the_file(storage, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermanentStorageError, match=r"repo: write sets/m.json: permission denied$"):
        save_bytes(storage, "sets/m.json", b"{}")


def test_open_storage_paths_and_urls(tmp_path):
    assert open_storage(str(tmp_path)).describe() == str(tmp_path)
    assert open_storage(f"file://{tmp_path}/x%20y").describe() == f"{tmp_path}/x y"
    assert open_storage("relative/dir").describe() == os.path.abspath("relative/dir")
    unknown = r"storage gopher://h/p: unknown scheme 'gopher' \(use a folder path or one of .*file://"
    with pytest.raises(UsageError, match=unknown):
        open_storage("gopher://h/p?secret=x")
    with pytest.raises(UsageError, match=r"storage s3x://bucket/p: unknown scheme") as err:
        open_storage("s3x://KEY:SECRET@bucket/p?X-Amz-Signature=abc#f")
    assert "SECRET" not in str(err.value) and "KEY" not in str(err.value) and "abc" not in str(err.value)
    with pytest.raises(UsageError, match="do not apply to a local folder"):
        open_storage(str(tmp_path), {"endpoint": "http://x"})
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
    save_bytes(storage, "sets/real/manifest.json", b"{}")
    os.symlink(outside, os.path.join(storage.root, "sets", "evil"))

    assert list_names(storage, "sets/") == ["sets/real/manifest.json"]
    assert "sets/evil is a symbolic link: ignored" in caplog.text
    message = r"sets/evil is a symbolic link; refusing to follow it"
    with pytest.raises(StorageError, match=message):
        read_all(storage, "sets/evil/manifest.json")
    with pytest.raises(StorageError, match=message):
        storage.stat("sets/evil/manifest.json")
    with pytest.raises(StorageError, match=message):
        list_names(storage, "sets/evil/")
    with pytest.raises(StorageError, match=message):
        save_bytes(storage, "sets/evil/manifest.json", b"overwritten")
    with pytest.raises(StorageError, match=message):
        storage.remove("sets/evil/manifest.json")
    with pytest.raises(StorageError, match=message):
        storage.remove_prefix("sets/evil/deep/")

    storage.remove_prefix("sets/evil/")  # removes the link itself, never what it points to
    assert not os.path.lexists(os.path.join(storage.root, "sets", "evil"))
    assert (outside / "manifest.json").read_bytes() == b"precious"
    assert (outside / "deep" / "x.zst").read_bytes() == b"precious too"
    assert list_names(storage, "") == ["sets/real/manifest.json"]


def test_a_symlinked_top_folder_is_refused(storage, outside):
    os.makedirs(storage.root)
    os.symlink(outside, os.path.join(storage.root, "sets"))
    with pytest.raises(StorageError, match="sets is a symbolic link"):
        list_names(storage, "sets/")
    with pytest.raises(StorageError, match="sets is a symbolic link"):
        storage.remove_prefix("sets/deep/")
    assert list_names(storage, "") == []  # the link is skipped
    assert sorted(os.listdir(outside)) == ["deep", "manifest.json"]


def test_a_symlinked_file_is_not_read_listed_or_replaced_through(storage, outside):
    save_bytes(storage, "sets/a/x.zst", b"mine")
    link = os.path.join(storage.root, "sets", "a", "manifest.json")
    os.symlink(outside / "manifest.json", link)
    assert list_names(storage, "sets/") == ["sets/a/x.zst"]
    for operation in (storage.stat, storage.open_read):
        with pytest.raises(StorageError, match=r"sets/a/manifest\.json is a symbolic link; refusing"):
            operation("sets/a/manifest.json")
    save_bytes(storage, "sets/a/manifest.json", b"new")  # replaces the link, not its target
    assert not os.path.islink(link)
    storage.remove("sets/a/manifest.json")
    os.symlink(outside / "manifest.json", link)
    storage.remove("sets/a/manifest.json")  # the link goes
    assert not os.path.lexists(link)
    assert (outside / "manifest.json").read_bytes() == b"precious"


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_blocking(storage):
    save_bytes(storage, "sets/a/x.zst", b".")
    os.mkfifo(os.path.join(storage.root, "sets", "a", "manifest.json"))
    with pytest.raises(StorageError, match=r"read sets/a/manifest\.json: not a regular file$"):
        read_all(storage, "sets/a/manifest.json")
    assert storage.stat("sets/a/manifest.json") is None
    assert list_names(storage, "sets/") == ["sets/a/x.zst"]


# -- private files --------------------------------------------------------------------------------


@pytest.fixture(params=[0o000, 0o022])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_files_are_0600_and_folders_0700_whatever_the_umask(tmp_path, umask):
    storage = LocalStorage(str(tmp_path / "new" / "repo"))
    save_bytes(storage, "sets/a/t/x.zst", b"secret rows")
    with storage.open_write("sets/a/manifest.json", if_absent=True) as writer:
        writer.commit()
    for folder in ["new", "new/repo", "new/repo/sets", "new/repo/sets/a", "new/repo/sets/a/t"]:
        assert oct(os.stat(tmp_path / folder).st_mode & 0o777) == oct(0o700), folder
    for file in ["sets/a/t/x.zst", "sets/a/manifest.json"]:
        assert oct(os.stat(os.path.join(storage.root, file)).st_mode & 0o777) == oct(0o600), file


def test_listing_never_drops_objects_that_stay_while_others_come_and_go(tmp_path: Path) -> None:
    """Writers rename temporaries into place and remove files while another process
    lists: the objects that stay are always listed (a vanished entry once emptied the
    whole listing, and two backups both took the storage lock)."""
    storage = LocalStorage(str(tmp_path / "s"))
    stable = [f"locks/stable-{i}.json" for i in range(5)]
    for name in stable:
        save_bytes(storage, name, b"x")
    stop = threading.Event()

    def churn(k: int) -> None:
        n = 0
        while not stop.is_set():
            name = f"locks/churn-{k}-{n % 7}.json"
            save_bytes(storage, name, b"y")
            storage.remove(name)
            save_bytes(storage, f"sets/s{k}-{n % 3}/a", b"z")
            storage.remove_prefix(f"sets/s{k}-{n % 3}/")
            n += 1

    threads = [threading.Thread(target=churn, args=(k,), daemon=True) for k in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            listed = list_names(storage, "locks/")
            assert all(name in listed for name in stable), listed
            list_names(storage, "")  # sub-folders removed mid-walk are skipped, not fatal
    finally:
        stop.set()
        for t in threads:
            t.join(10)
