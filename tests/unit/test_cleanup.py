"""Nothing left behind: private temporary folders, and what dead runs leave in storage and catalog."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.test_locks import dead_pid, plant
from tests.unit.test_manifest_catalog import make_manifest
from txbackup import scratch
from txbackup.catalog import COMPLETE, FAILED, RUNNING, Catalog
from txbackup.clock import iso_ms, utc_now
from txbackup.engine.cleanup import clean
from txbackup.engine.manifest import write_manifest
from txbackup.errors import StorageError
from txbackup.locks import StorageLock
from txbackup.owner import Owner, machine_tag
from txbackup.storage import LocalStorage
from txbackup.storage.base import list_names, save_bytes
from txbackup.storage.local import TMP_PREFIX


@pytest.fixture
def tmpdir_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TMPDIR is a fresh folder for this test (and this process has no run folder yet)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(scratch, "_run", None)
    yield folder
    scratch.remove_run_folder()


def test_private_dirs_live_in_one_private_run_folder(tmpdir_here: Path) -> None:
    old = os.umask(0)
    try:
        with scratch.private_dir("sqlite-") as first, scratch.private_dir("pg-") as second:
            run = Path(first).parent
            assert run == Path(second).parent == Path(scratch.run_folder())
            assert run.parent == tmpdir_here / f"txbackup-{os.getuid()}"
            assert run.name.startswith(f"run-{os.getpid()}-")
            for folder in (run.parent, run, Path(first)):
                assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
            Path(first, "copy.db").write_bytes(b"secret rows")
    finally:
        os.umask(old)
    assert not Path(first).exists() and not Path(second).exists()
    assert scratch.dead_runs() == []  # ours is alive


def test_a_planted_or_foreign_root_is_refused(tmpdir_here: Path) -> None:
    (tmpdir_here / "elsewhere").mkdir()
    (tmpdir_here / f"txbackup-{os.getuid()}").symlink_to(tmpdir_here / "elsewhere")
    with pytest.raises(StorageError, match=r"temporary folder .*txbackup-\d+: not a folder") as info:
        scratch.run_folder()
    assert "\n" not in str(info.value)


def test_an_open_root_is_tightened(tmpdir_here: Path) -> None:
    root = tmpdir_here / f"txbackup-{os.getuid()}"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    scratch.run_folder()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


RUN = """
import os, sys, time
from txbackup.scratch import private_dir
with private_dir("sqlite-") as folder:
    open(os.path.join(folder, "copy.db"), "wb").write(b"secret rows")
    print(folder, flush=True)
    if sys.argv[1] == "exit":
        sys.exit(0)
    time.sleep(60)
"""


def run_copying(tmpdir_here: Path, how: str) -> tuple[subprocess.Popen[str], Path]:
    env = os.environ | {"TMPDIR": str(tmpdir_here)}
    proc = subprocess.Popen([sys.executable, "-c", RUN, how], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_run_folder_removed_at_exit_and_a_killed_runs_folder_by_cleanup(tmpdir_here: Path) -> None:
    proc, folder = run_copying(tmpdir_here, "exit")
    proc.wait(10)
    assert not folder.parent.exists()  # removed at exit

    proc, folder = run_copying(tmpdir_here, "sleep")
    assert (folder / "copy.db").exists()
    assert scratch.dead_runs() == []  # alive: not touched
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert folder.parent.exists()  # a killed process cannot clean up
    [(path, reason)] = scratch.remove_dead_runs()
    assert path == str(folder.parent) and f"process {proc.pid}" in reason
    assert not folder.parent.exists()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[LocalStorage, Catalog]:
    return LocalStorage(str(tmp_path / "store")), Catalog(str(tmp_path / "catalog.db"))


def run_of(owner: Owner, storage: str) -> dict[str, object]:
    return {"owner": owner.to_dict(), "storage": storage, "lock_id": "20261127T101500123Z-00000000"}


def partial(storage: LocalStorage, set_id: str) -> None:
    save_bytes(storage, f"sets/{set_id}/pg/a.dump.zst", b"partial")


def test_clean_removes_what_dead_runs_left_and_nothing_else(
    repo: tuple[LocalStorage, Catalog], tmpdir_here: Path
) -> None:
    storage, catalog = repo
    here = storage.describe()
    me = Owner.current()
    dead = Owner(me.user, me.host, dead_pid(), None, me.machine)
    remote = Owner("bob", "elsewhere", 4242, 7, "another-machine")
    long_ago = utc_now() - timedelta(hours=2)

    catalog.begin("dead", utc_now(), ["pg"], run_of(dead, here))
    partial(storage, "dead")
    catalog.begin("alive", utc_now(), ["pg"], run_of(me, here))
    partial(storage, "alive")
    catalog.begin("finished", utc_now(), ["pg"], run_of(dead, here))  # killed just after its manifest
    write_manifest(storage, make_manifest("finished"))
    catalog.begin("remote", utc_now(), ["pg"], run_of(remote, here))
    catalog.begin("other-storage", utc_now(), ["pg"], run_of(remote, "/some/other/storage"))
    catalog.begin("legacy-old", iso_ms(long_ago), ["pg"])
    catalog.begin("legacy-new", utc_now(), ["pg"])
    partial(storage, "orphan")  # no manifest, no row
    write_manifest(storage, make_manifest("kept"))
    catalog.complete(make_manifest("kept"))
    old_tmp = Path(storage.root, "sets", "kept", TMP_PREFIX + "old")
    old_tmp.write_bytes(b"half")
    os.utime(old_tmp, (time.time() - 3600, time.time() - 3600))
    new_tmp = Path(storage.root, TMP_PREFIX + "new")
    new_tmp.write_bytes(b"half")
    only_tmp = Path(storage.root, "sets", "tmponly", "pg")
    only_tmp.mkdir(parents=True)
    (only_tmp / (TMP_PREFIX + "x")).write_bytes(b"half")
    os.utime(only_tmp / (TMP_PREFIX + "x"), (time.time() - 3600, time.time() - 3600))
    lock = StorageLock(storage, "cleanup")
    assert lock.attempt() is True
    stale = plant(storage, dead)
    save_bytes(storage, "locks/junk.json", b"junk")
    _proc, folder = run_copying(tmpdir_here, "sleep")
    _proc.send_signal(signal.SIGKILL)
    _proc.wait(10)

    report = clean(storage, catalog, lock)
    lock.release()

    rows = {r.set_id: r for r in catalog.list()}
    assert rows["dead"].status == FAILED and f"pid {dead.pid}" in (rows["dead"].error or "")
    assert (rows["dead"].error or "").startswith("abandoned: its backup")
    assert rows["alive"].status == RUNNING
    assert rows["finished"].status == COMPLETE
    assert rows["remote"].status == FAILED
    assert "no longer holds the storage lock" in (rows["remote"].error or "")
    assert rows["other-storage"].status == RUNNING
    assert rows["legacy-old"].status == FAILED and rows["legacy-new"].status == RUNNING
    assert rows["kept"].status == COMPLETE
    sets = {name.split("/")[1] for name in list_names(storage, "sets/")}
    assert sets == {"alive", "finished", "kept"}
    assert not old_tmp.exists() and new_tmp.exists() and not Path(storage.root, "sets", "tmponly").exists()
    assert list_names(storage, "locks/") == []
    assert not folder.parent.exists()
    assert sorted(report.partial_sets_removed) == ["orphan", "tmponly"]
    assert {name for name, _ in report.locks_removed} == {stale.name, "locks/junk.json"}
    assert report.problems == [] and len(report.lines()) == 11


def test_hostile_records_are_judged_without_crashing(
    repo: tuple[LocalStorage, Catalog], tmpdir_here: Path
) -> None:
    """Owners read from the catalog and folder names are untrusted: absurd pids are not processes."""
    storage, catalog = repo
    huge = {"user": "u", "host": "h", "pid": 2**70, "started": -1, "machine": Owner.current().machine}
    catalog.begin("absurd", utc_now() - timedelta(hours=2), ["pg"], {"owner": huge, "storage": 5})
    root = Path(scratch.root())
    root.mkdir(mode=0o700)
    absurd = f"run-9999999999-0-{machine_tag()}"
    (root / absurd).mkdir()
    lock = StorageLock(storage, "cleanup")
    assert lock.attempt() is True
    report = clean(storage, catalog, lock)
    lock.release()
    assert [s for s, _ in report.sets_failed] == ["absurd"] and report.problems == []
    assert [Path(f).name for f, _ in report.local_folders_removed] == [absurd]
