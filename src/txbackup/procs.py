"""Running the databases' own command-line tools (pg_dump, pg_restore, mariadb...).

Shared by the SQL targets. Every helper:

- finds the tool first and fails with a clear message naming it when it is not
  installed (``find_tool``);
- takes credentials only through the environment (``PGPASSWORD``,
  ``MYSQL_PWD``), never in argv, where ``ps`` would show them;
- captures stderr in the background (so a chatty tool can never block) and,
  when the tool fails, raises a one-line ``TargetError`` naming the culprit,
  the tool and the last meaningful line of what it said;
- streams data in chunks, so a dump or a restore never sits in memory.

If the other end of a stream fails (the storage while dumping, the artifact
reader while restoring), the tool is killed and that error propagates as is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

from txbackup.errors import TargetError

CHUNK = 1 << 20
_KEEP_LINES = 50
_MAX_MESSAGE = 400

# "error:", "ERROR:  x", "ERROR 1045 (28000) at line 3: x", "FATAL:  x", "mariadb: Unknown..."
_ERRORISH = re.compile(r"(?i)(^|:\s*)(error|fatal|panic)\b")
_NOISE = re.compile(r"(?i)^(hint|detail|context|line \d+|command was|\^|while processing toc)")


def find_tool(
    name: str, *, culprit: str, alternatives: Sequence[str] = (), bin_dir: str | None = None
) -> str:
    """The absolute path of tool ``name`` (or the first of ``alternatives`` found).

    Looks in ``bin_dir`` only when given, else on PATH. Raises ``TargetError``
    naming the tool when none is installed.
    """
    for candidate in (name, *alternatives):
        found = shutil.which(candidate, path=bin_dir) if bin_dir else shutil.which(candidate)
        if found:
            return found
    names = " or ".join((name, *alternatives))
    where = f"in {bin_dir}" if bin_dir else "on PATH"
    raise TargetError(f"{culprit}: {names} not found {where}; install the database's client tools")


def one_line(text: str) -> str:
    """The most telling line of a tool's (or driver's) multi-line message.

    The last line that looks like an error wins (hints, details and echoed
    commands are skipped); otherwise the last non-empty line. The tool's own
    ``name:`` prefix is dropped, runs of whitespace collapse to one space.
    """
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line and not _NOISE.match(_strip_tool(line))]
    if not lines:
        return ""
    errorish = [line for line in lines if _ERRORISH.search(line)]
    chosen = _strip_tool(errorish[-1] if errorish else lines[-1])
    chosen = re.sub(r"(?i)^(error|fatal):\s*", "", chosen)
    if len(chosen) > _MAX_MESSAGE:
        chosen = chosen[: _MAX_MESSAGE - 3] + "..."
    return chosen


def _strip_tool(line: str) -> str:
    # "pg_dump: error: x" -> "error: x"; "mariadb: Unknown OS character set" -> as is minus prefix
    match = re.match(r"^[\w.-]+: (?=\S)", line)
    if match and not re.match(r"(?i)^(error|fatal|warning|hint|detail)\b", line):
        return line[match.end() :]
    return line


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a tool: ours, English messages, plus ``extra``."""
    env = dict(os.environ)
    env["LC_MESSAGES"] = "C"
    env.pop("LC_ALL", None)
    if extra:
        env.update(extra)
    return env


class _Tool:
    """A started tool whose stderr is collected in the background."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        culprit: str,
        env: Mapping[str, str] | None,
        stdin: int | None,
        stdout: int | None,
        cwd: str | None = None,
    ) -> None:
        self.name = Path(argv[0]).name
        self.culprit = culprit
        self.lines: deque[str] = deque(maxlen=_KEEP_LINES)
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=tool_env(env),
                cwd=cwd,
                # its own process group: kill() also reaches the helpers it forks
                start_new_session=True,
            )
        except FileNotFoundError:
            raise TargetError(f"{culprit}: {self.name} not found ({argv[0]})") from None
        except OSError as exc:
            raise TargetError(f"{culprit}: cannot run {self.name}: {exc.strerror}") from None
        self._reader = threading.Thread(target=self._drain, name=f"{self.name}-stderr", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def kill(self) -> None:
        """Stop the tool (and its process group) at once; used when our side failed.
        Killed before its input closes: an end of input it saw first could end a load
        normally (a restore client committing part of a dump whose rest was refused)."""
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.proc.wait()
        self._reader.join(timeout=5)

    def finish(self) -> None:
        """Wait for the tool; raise ``TargetError`` if it failed."""
        code = self.proc.wait()
        self._reader.join(timeout=5)
        if code != 0:
            raise self.error(code)

    def error(self, code: int) -> TargetError:
        said = one_line("\n".join(self.lines))
        if not said:
            said = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return TargetError(f"{self.culprit}: {self.name} failed: {said}")


PIPE_BYTES = 1 << 20
"""What a pipe we feed a tool through may hold (Linux's default is 64 KiB; 1 MiB is the
unprivileged maximum): fewer switches between our writer and the tool reading it."""


def widen_pipe(fd: int) -> None:
    """Grow the pipe ``fd`` to ``PIPE_BYTES`` where the system allows it (else unchanged)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or a lower limit
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def start(argv: Sequence[str], *, culprit: str, env: Mapping[str, str] | None = None) -> _Tool:
    """Start a tool that reads files itself (no stdin, stdout discarded) and return it
    running: the caller feeds it (e.g. named pipes), then ``finish()`` or ``kill()``."""
    return _Tool(argv, culprit=culprit, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def run(
    argv: Sequence[str],
    *,
    culprit: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> str:
    """Run a tool to completion and return its stdout as text."""
    name = Path(argv[0]).name
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            env=tool_env(env),
            cwd=cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise TargetError(f"{culprit}: {name} not found ({argv[0]})") from None
    except subprocess.TimeoutExpired:
        raise TargetError(f"{culprit}: {name} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise TargetError(f"{culprit}: cannot run {name}: {exc.strerror}") from None
    if done.returncode != 0:
        said = one_line(done.stderr.decode("utf-8", "replace")) or one_line(
            done.stdout.decode("utf-8", "replace")
        )
        if not said:
            said = f"exited with status {done.returncode}"
        raise TargetError(f"{culprit}: {name} failed: {said}")
    return done.stdout.decode("utf-8", "replace")


def run_to_stream(
    argv: Sequence[str],
    out: IO[bytes],
    *,
    culprit: str,
    env: Mapping[str, str] | None = None,
    chunk: int = CHUNK,
) -> int:
    """Run a tool and copy its stdout into ``out`` (e.g. a dump into an artifact).

    Returns the number of bytes copied.
    """
    tool = _Tool(argv, culprit=culprit, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert tool.proc.stdout is not None
    total = 0
    try:
        while data := tool.proc.stdout.read(chunk):
            out.write(data)
            total += len(data)
    except BaseException:
        tool.kill()
        raise
    finally:
        tool.proc.stdout.close()
    tool.finish()
    return total


def run_from_stream(
    argv: Sequence[str],
    source: IO[bytes] | Iterable[bytes],
    *,
    culprit: str,
    env: Mapping[str, str] | None = None,
    chunk: int = CHUNK,
) -> int:
    """Run a tool feeding ``source`` (a binary stream or an iterable of chunks)
    into its stdin (e.g. an artifact into a restore client). Its stdout is discarded.

    Returns the number of bytes fed.
    """
    tool = _Tool(argv, culprit=culprit, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert tool.proc.stdin is not None
    widen_pipe(tool.proc.stdin.fileno())
    chunks: Iterable[bytes]
    if hasattr(source, "read"):
        stream = source
        chunks = iter(lambda: stream.read(chunk), b"")  # type: ignore[union-attr]
    else:
        chunks = source
    total = 0
    broken = False
    try:
        for data in chunks:
            try:
                tool.proc.stdin.write(data)
            except BrokenPipeError:
                broken = True  # the tool stopped reading: it failed; finish() says why
                break
            total += len(data)
        try:
            tool.proc.stdin.close()
        except BrokenPipeError:
            broken = True
    except BaseException:
        tool.kill()
        raise
    tool.finish()
    if broken:
        raise TargetError(f"{culprit}: {tool.name} stopped reading its input after {total} bytes")
    return total


def run_checked(
    argv: Sequence[str],
    *,
    culprit: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> None:
    """Run a tool that writes files itself (e.g. ``pg_dump -Fd``); its stdout is discarded."""
    tool = _Tool(
        argv, culprit=culprit, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=cwd
    )
    try:
        tool.finish()
    except TargetError:
        raise
    except BaseException:
        tool.kill()
        raise
