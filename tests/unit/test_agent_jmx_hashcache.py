"""The agent's JMX helper protocol (against fake and real helpers, no Cassandra) and its
hash cache (plain files)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest

from txbackup.agent import blobs, hashcache, jmx
from txbackup.errors import TargetError
from txbackup.storage import LocalStorage

# -- the JMX helper: what it prints is untrusted --------------------------------------------------


def fake_java(tmp_path: Path, body: str) -> list[str]:
    """A "java" that ignores its arguments and runs ``body`` (Python) on the helper's stdin."""
    script = tmp_path / "fake_java.py"
    script.write_text("import sys, json\n" + body)
    return [sys.executable, str(script)]


CONNECTS = (
    "line = sys.stdin.readline()\n"
    'print(json.dumps({"ok": True, "host_id": "h-1", "release_version": "5.0.9", "ms": 1}), flush=True)\n'
)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ('print("not json", flush=True)', "bad answer to snapshot"),
        ('print(json.dumps({"id": 99, "ok": True}), flush=True)', "answer to request 99, not 1"),
        ('print(json.dumps({"id": 1}), flush=True)', "no ok field"),
        ("print(json.dumps([1]), flush=True)", "not a JSON object"),
        ('print("{" + "x" * 70000, flush=True)', "exited during snapshot"),  # over MAX_LINE
        ("sys.exit(3)", "exited during snapshot"),
        ("import time; time.sleep(30)", "no answer within 1 s"),
    ],
)
def test_a_misbehaving_helper_is_killed_and_named(tmp_path: Path, answer: str, message: str) -> None:
    helper = jmx.JmxHelper(
        "127.0.0.1", 7199, fake_java(tmp_path, CONNECTS + "sys.stdin.readline()\n" + answer)
    )
    helper.start(timeout=20)
    assert helper.host_id == "h-1" and helper.alive
    started = time.monotonic()
    with pytest.raises(jmx.HelperUnavailable, match=message):
        helper.call("snapshot", 1, tag="t", keyspaces=["ks"])
    assert time.monotonic() - started < 10
    assert not helper.alive  # killed: the supervisor starts another
    with pytest.raises(jmx.HelperUnavailable, match="not running"):
        helper.call("ping", 1)


def test_a_refusal_by_the_node_is_a_target_error_and_the_helper_stays(tmp_path: Path) -> None:
    body = CONNECTS + (
        "for line in sys.stdin:\n"
        "    req = json.loads(line)\n"
        '    print(json.dumps({"id": req["id"], "ok": False, "error": "IOException:  Snapshot t\\n exists"}),'
        " flush=True)\n"
    )
    helper = jmx.JmxHelper("127.0.0.1", 7199, fake_java(tmp_path, body))
    helper.start(timeout=20)
    try:
        with pytest.raises(
            TargetError, match=r"^snapshot failed \(JMX\): IOException: Snapshot t exists$"
        ) as info:
            helper.call("snapshot", 5, tag="t", keyspaces=["ks"])
        assert not isinstance(info.value, jmx.HelperUnavailable)
        assert helper.alive
    finally:
        helper.close()
    assert not helper.alive


def test_a_connection_broken_during_the_call_is_uncertain(tmp_path: Path) -> None:
    """The node may have taken the snapshot before the connection broke: the capture must
    clear it (a TargetError without "snapshot failed")."""
    body = CONNECTS + (
        "req = json.loads(sys.stdin.readline())\n"
        'print(json.dumps({"id": req["id"], "ok": False, "uncertain": True,'
        ' "error": "ConnectException: Connection refused"}), flush=True)\n'
        "sys.stdin.readline()\n"
    )
    helper = jmx.JmxHelper("127.0.0.1", 7199, fake_java(tmp_path, body))
    helper.start(timeout=20)
    try:
        broke = "the connection to the node broke: ConnectException"
        with pytest.raises(jmx.CallUncertain, match=broke) as info:
            helper.call("snapshot", 5, tag="t", keyspaces=["ks"])
        assert "snapshot failed" not in str(info.value)
    finally:
        helper.close()


def test_the_password_goes_to_stdin_never_to_argv(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    body = (
        f"open({str(seen)!r}, 'w').write(json.dumps({{'argv': sys.argv, 'first': sys.stdin.readline()}}))\n"
        'print(json.dumps({"ok": True, "host_id": "h", "release_version": "5"}), flush=True)\n'
    )
    helper = jmx.JmxHelper("127.0.0.1", 7199, fake_java(tmp_path, body), user="cassandra", password="s3cret")
    helper.start(timeout=20)
    helper.close()
    recorded = json.loads(seen.read_text())
    assert "s3cret" not in " ".join(recorded["argv"])
    assert json.loads(recorded["first"])["password"] == "s3cret"


def test_no_java_is_unavailable_not_a_traceback(tmp_path: Path) -> None:
    helper = jmx.JmxHelper("127.0.0.1", 7199, [str(tmp_path / "no-java")])
    with pytest.raises(jmx.HelperUnavailable, match="cannot run"):
        helper.start()


@pytest.mark.skipif(shutil.which("java") is None, reason="java is not installed")
def test_the_real_helper_names_a_refused_connection(tmp_path: Path) -> None:
    """JmxHelper.java compiles and answers in its protocol (no node: port 1 refuses)."""
    helper = jmx.JmxHelper("127.0.0.1", 1)
    with pytest.raises(jmx.HelperUnavailable, match=r"JMX 127\.0\.0\.1:1: .*Connection refused"):
        helper.start()
    assert not helper.alive


def test_the_supervisor_falls_back_and_starts_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    java = fake_java(tmp_path, CONNECTS + "sys.stdin.readline()\n")
    attempts: list[int] = []

    def make() -> jmx.JmxHelper:
        attempts.append(1)
        if len(attempts) == 1:
            raise jmx.HelperUnavailable("JMX 127.0.0.1:7199: Connection refused")
        helper = jmx.JmxHelper("127.0.0.1", 7199, java)
        helper.start(timeout=20)
        return helper

    supervisor = jmx.Supervisor(make, lambda helper: None)
    with caplog.at_level(logging.WARNING, logger="txbackup.agent"):
        assert supervisor.ensure() is None
    assert "Connection refused; snapshots use nodetool" in caplog.text
    assert supervisor.ensure() is None and len(attempts) == 1  # a preflight does not wait again so soon
    first = supervisor.ensure(retry_after=0)
    assert first is not None and supervisor.current() is first
    assert first.process is not None
    first.process.kill()
    first.process.wait()
    assert supervisor.current() is None  # dead: noticed, never waited for
    supervisor.run()
    try:
        deadline = time.monotonic() + 20
        while supervisor.current() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        second = supervisor.current()
        assert second is not None and second.pid != first.pid
    finally:
        supervisor.close()


def test_a_helper_reaching_another_node_is_refused(tmp_path: Path) -> None:
    java = fake_java(tmp_path, CONNECTS + "sys.stdin.readline()\n")

    def make() -> jmx.JmxHelper:
        helper = jmx.JmxHelper("127.0.0.1", 7199, java)
        helper.start(timeout=20)
        return helper

    def check(helper: jmx.JmxHelper) -> None:
        if helper.host_id != "h-2":
            raise TargetError(f"JMX reaches node {helper.host_id}, not this agent's node h-2")

    supervisor = jmx.Supervisor(make, check)
    assert supervisor.ensure() is None
    assert "not this agent's node h-2" in supervisor.last_error


# -- the hash cache -------------------------------------------------------------------------------


def snapshot_file(root: Path, tag: str, name: str = "nb-1-big-Data.db") -> Path:
    """A live SSTable and its hard link in snapshot ``tag`` (as Cassandra makes them)."""
    table = root / "ks" / "t-0123456789abcdef0123456789abcdef"
    live = table / name
    if not live.exists():
        table.mkdir(parents=True, exist_ok=True)
        live.write_bytes(os.urandom(4096))
    snap = table / "snapshots" / tag
    snap.mkdir(parents=True, exist_ok=True)
    os.link(live, snap / name)
    return snap / name


def test_two_snapshots_of_one_sstable_share_a_key(tmp_path: Path) -> None:
    a, b = snapshot_file(tmp_path, "set-1"), snapshot_file(tmp_path, "set-2")
    assert hashcache.live_path(str(a)) == hashcache.live_path(str(b)) == str(a.parents[2] / a.name)
    # the new link changed the inode's ctime, not the key
    assert hashcache.key_of(str(a), os.stat(a)) == hashcache.key_of(str(b), os.stat(b))


def test_a_changed_file_is_a_miss(tmp_path: Path) -> None:
    path = snapshot_file(tmp_path, "set-1")
    cache = hashcache.HashCache(tmp_path / "state")
    key = hashcache.key_of(str(path), os.stat(path))
    cache.put(key, hashcache.Digests("a" * 64, "", ""))
    assert cache.get(key, "") == hashcache.Digests("a" * 64, "", "")
    # same size, other bytes, other mtime
    path.write_bytes(os.urandom(4096))
    os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 1))
    assert cache.get(hashcache.key_of(str(path), os.stat(path)), "") is None
    # same size and mtime, another inode (the file replaced)
    st = os.stat(path)
    replacement = path.with_name("tmp")
    replacement.write_bytes(path.read_bytes())
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    cache.put(hashcache.key_of(str(path), st), hashcache.Digests("b" * 64, "", ""))
    os.replace(replacement, path)
    new = os.stat(path)
    assert (new.st_size, new.st_mtime_ns) == (st.st_size, st.st_mtime_ns) and new.st_ino != st.st_ino
    assert cache.get(hashcache.key_of(str(path), new), "") is None


def test_an_entry_of_another_blob_key_is_a_miss(tmp_path: Path) -> None:
    cache = hashcache.HashCache(None)
    key = ("/d/ks/t/f", 1, 2, 3, 4)
    one, two = hashcache.key_id(b"1" * 32), hashcache.key_id(b"2" * 32)
    cache.put(key, hashcache.Digests("a" * 64, "b" * 64, one))
    assert cache.get(key, one) is not None
    assert cache.get(key, two) is None
    assert cache.get(key, "") is not None  # a plain repository needs only the SHA-256


def test_the_cache_file_is_private_bounded_and_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cache = hashcache.HashCache(state, max_entries=3)
    for i in range(5):
        cache.put((f"/d/f{i}", i, i, i, i), hashcache.Digests(f"{i:x}" * 64, "", ""))
    cache.get(("/d/f2", 2, 2, 2, 2), "")  # used: kept before f3 and f4
    cache.save()
    path = state / hashcache.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = hashcache.HashCache(state, max_entries=3)
    assert len(again) == 3
    assert again.get(("/d/f2", 2, 2, 2, 2), "") is not None
    assert again.get(("/d/f0", 0, 0, 0, 0), "") is None  # the least recently used went


@pytest.mark.parametrize(
    "content",
    [
        b"garbage",
        b'{"format": "txbackup-hash-cache", "version": 1, "entries": [["/f", 1, 2, 3, 4, "zz", "", ""]]}',
        b'{"format": "txbackup-hash-cache", "version": 1, "entries": [["/f", -1, 2, 3, 4, "'
        + b"a" * 64
        + b'", "", ""]]}',
        b'{"format": "other", "version": 1, "entries": []}',
        b'{"format": "txbackup-hash-cache", "version": 1, "entries": {}}',
    ],
)
def test_a_corrupt_cache_is_ignored_with_a_warning_and_rebuilt(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / hashcache.FILE_NAME).write_bytes(content)
    cache = hashcache.HashCache(state)
    with caplog.at_level(logging.WARNING, logger="txbackup.agent"):
        assert len(cache) == 0
    assert "ignored (it is rebuilt)" in caplog.text
    cache.put(("/d/f", 1, 2, 3, 4), hashcache.Digests("c" * 64, "", ""))
    cache.save()
    assert len(hashcache.HashCache(state)) == 1


def test_a_stale_cached_digest_is_never_uploaded(tmp_path: Path) -> None:
    """A digest that does not match the bytes aborts the upload (StaleDigest), stores nothing."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    storage = LocalStorage(str(tmp_path / "store"))
    with pytest.raises(blobs.StaleDigest):
        blobs.put_file(storage, "cassandra/c/sstables", str(path), known=("d" * 64, 1000, "d" * 64))
    assert storage.stat(blobs.blob_name("cassandra/c/sstables", "d" * 64)) is None
    stored = blobs.put_file(storage, "cassandra/c/sstables", str(path))
    assert stored.hashed and stored.uploaded
    again = blobs.put_file(
        storage, "cassandra/c/sstables", str(path), known=(stored.sha256, stored.size, stored.blob)
    )
    assert not again.hashed and not again.uploaded and again.sha256 == stored.sha256


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--jmx", "nope"], "--jmx nope: expected HOST:PORT"),
        (["--jmx", "127.0.0.1:70000"], "expected HOST:PORT"),
        (["--jmx-password-env", "HOME"], "need --jmx-user"),
        (["--java", ""], "--java: empty command"),
    ],
)
def test_bad_jmx_options_are_one_line_usage_errors(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from txbackup.cli import main

    argv = ["agent", "--no-token", "--port", "0", "--cassandra-data", str(tmp_path)]
    argv += ["--storage", str(tmp_path)]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
