from __future__ import annotations

import io
import time

import pytest

from txbackup.errors import TargetError
from txbackup.procs import find_tool, one_line, run, run_checked, run_from_stream, run_to_stream

WHO = 'target "t" (test)'


def test_find_tool(tmp_path):
    assert find_tool("sh", culprit=WHO).endswith("/sh")
    assert find_tool("no-such-tool-x", alternatives=("sh",), culprit=WHO).endswith("/sh")
    with pytest.raises(TargetError) as err:
        find_tool("pg_dumpx", alternatives=("pg_dumpy",), culprit=WHO, bin_dir=str(tmp_path))
    assert str(err.value) == (
        f"{WHO}: pg_dumpx or pg_dumpy not found in {tmp_path}; install the database's client tools"
    )


def test_one_line_picks_the_error():
    pg_restore = """pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 215; 1259 16390 TABLE t postgres
pg_restore: error: could not execute query: ERROR:  relation "t" already exists
Command was: CREATE TABLE public.t (error_code integer);

pg_restore: warning: errors ignored on restore: 1
"""
    assert one_line(pg_restore) == 'could not execute query: ERROR: relation "t" already exists'
    assert one_line("ERROR 1064 (42000) at line 3: You have an error\n") == (
        "ERROR 1064 (42000) at line 3: You have an error"
    )
    assert one_line("pg_dump: error: connection failed: FATAL:  no\nHINT:  try\n") == (
        "connection failed: FATAL: no"
    )
    assert one_line("just a line\n\n") == "just a line"
    assert one_line("") == ""
    assert len(one_line("error: " + "x" * 1000)) == 400


def test_run_to_stream_and_failure():
    out = io.BytesIO()
    assert run_to_stream(["sh", "-c", "printf abc"], out, culprit=WHO) == 3
    assert out.getvalue() == b"abc"
    with pytest.raises(TargetError) as err:
        run_to_stream(
            ["sh", "-c", "printf x; echo 'sh: error: boom' >&2; echo 'HINT: no' >&2; exit 3"],
            io.BytesIO(),
            culprit=WHO,
        )
    assert str(err.value) == f"{WHO}: sh failed: boom"
    with pytest.raises(TargetError, match="sh failed: exited with status 4"):
        run_to_stream(["sh", "-c", "exit 4"], io.BytesIO(), culprit=WHO)


def test_tool_not_found_when_started():
    with pytest.raises(TargetError, match="nope-tool not found"):
        run_to_stream(["/nonexistent/nope-tool"], io.BytesIO(), culprit=WHO)
    with pytest.raises(TargetError, match="nope-tool not found"):
        run(["/nonexistent/nope-tool"], culprit=WHO)


class BrokenStorage(io.BytesIO):
    def write(self, data):  # type: ignore[override]
        raise OSError(28, "No space left on device")


def test_storage_failure_kills_the_tool_and_propagates():
    started = time.monotonic()
    with pytest.raises(OSError, match="No space left"):
        run_to_stream(["yes"], BrokenStorage(), culprit=WHO)  # endless output
    assert time.monotonic() - started < 10


def test_run_from_stream():
    seen = io.BytesIO()
    assert run_from_stream(["sh", "-c", "cat > /dev/null"], [b"a" * 10, b"b" * 5], culprit=WHO) == 15
    assert run_from_stream(["sh", "-c", "wc -c >/dev/null"], io.BytesIO(b"x" * 100), culprit=WHO) == 100
    # the tool fails after reading a little: its complaint, not a broken pipe, is reported
    big = io.BytesIO(b"y" * (8 << 20))
    with pytest.raises(TargetError) as err:
        run_from_stream(
            ["sh", "-c", "head -c 10 >/dev/null; echo 'ERROR 1064 (42000) at line 1: bad' >&2; exit 1"],
            big,
            culprit=WHO,
        )
    assert str(err.value) == f"{WHO}: sh failed: ERROR 1064 (42000) at line 1: bad"
    assert seen.getvalue() == b""


def test_source_failure_kills_the_tool():
    def chunks():
        yield b"data"
        raise OSError(5, "read error")

    started = time.monotonic()
    with pytest.raises(OSError, match="read error"):
        run_from_stream(["sh", "-c", "cat >/dev/null; true"], chunks(), culprit=WHO)
    assert time.monotonic() - started < 3


def test_secrets_go_through_the_environment(tmp_path):
    assert run(["sh", "-c", "printf %s \"$PGPASSWORD\""], culprit=WHO, env={"PGPASSWORD": "s3"}) == "s3"
    run_checked(["sh", "-c", "touch made"], culprit=WHO, cwd=str(tmp_path))
    assert (tmp_path / "made").exists()
    with pytest.raises(TargetError, match=r"did not finish within 0\.2 s"):
        run(["sleep", "5"], culprit=WHO, timeout=0.2)
