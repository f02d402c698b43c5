"""``txbackup demo``: what txbackup is for, in one command, with nothing to install."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from txbackup.cli.common import add_json, print_json
from txbackup.demo.scenario import DemoResult, run_demo
from txbackup.errors import UsageError

NAME = "demo"
HELP = "see it work: a bank over two SQLite databases, backed up under load, restored, books checked"
DESCRIPTION = """\
A sample bank service keeps its accounts in two SQLite databases; every transfer
debits an account in one database, then credits an account in the other (two
local transactions, like an application spread over several databases). While
clients move money, the demo takes

  - a txbackup backup: pause the service (in-flight transfers finish first),
    capture both databases inside the pause, unpause, export, and
  - a naive copy: each database copied on its own, one after the other,

restores both into fresh databases and checks the books: is the money all
there, and is no transfer half applied? Nothing to install: SQLite databases,
local folder storage and an SQLite catalog, in a temporary folder (removed at
the end unless --keep) or in --dir (a new or empty folder, kept).

Exit code 0 when the txbackup restore is consistent, 1 when it is not, 2 for
bad input, 130 on SIGINT and 143 on SIGTERM (the load and the service are
stopped first, nothing is left paused).

example: txbackup demo --seconds 5"""

MARKER = ".txbackup-demo"
OURS = {MARKER, "live", "backups", "naive-copy", "restored-txbackup", "restored-naive", "secrets"}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", metavar="DIR", help="work in this folder (new or empty; kept at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the load runs (%(default)g)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (%(default)s)")
    add_json(parser)


def prepare_dir(path: str | None) -> tuple[Path, bool]:
    """The folder to work in, and whether it is a temporary one of ours."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="txbackup-demo-")), True
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--dir {folder}: not a folder")
    entries = {entry.name for entry in folder.iterdir()} if folder.exists() else set()
    if entries and (MARKER not in entries or entries - OURS):
        raise UsageError(
            f"--dir {folder}: not empty and not made by txbackup demo; give a new or empty folder"
        )
    for name in entries - {MARKER}:  # a folder of an earlier demo run: start afresh
        shutil.rmtree(folder / name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("made by txbackup demo; a later demo run may empty this folder\n")
    except OSError as exc:
        raise UsageError(f"--dir {folder}: {exc.strerror}") from None
    return folder, False


class _DemoThread(threading.Thread):
    """Runs the demo's event loop off the main thread, so that the main thread
    owns SIGINT/SIGTERM: a signal cancels the demo, whose finally-blocks stop the
    load and the service (and the fleet's pause, seeing it is not on the main
    thread, leaves signals to us and unpauses in its own finally)."""

    def __init__(self, folder: Path, seconds: float, clients: int) -> None:
        super().__init__(name="txbackup-demo", daemon=True)
        self.folder, self.seconds, self.clients = folder, seconds, clients
        self.result: DemoResult | None = None
        self.error: BaseException | None = None
        self.interrupted = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[DemoResult] | None = None

    def run(self) -> None:
        try:
            self.result = asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc

    async def _main(self) -> DemoResult:
        task = asyncio.ensure_future(run_demo(self.folder, self.seconds, self.clients, say=_say))
        with self._lock:
            self._loop, self._task = asyncio.get_running_loop(), task
            if self.interrupted:
                task.cancel()
        return await task

    def interrupt(self) -> None:
        with self._lock:
            first = not self.interrupted
            self.interrupted = True
            if first and self._loop is not None and self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)


def _say(line: str) -> None:
    print(f"==> {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= 3600:
        raise UsageError(f"--seconds {args.seconds:g}: must be more than 0 and at most 3600")
    if not 1 <= args.clients <= 64:
        raise UsageError(f"--clients {args.clients}: must be between 1 and 64")
    folder, temporary = prepare_dir(args.dir)
    demo = _DemoThread(folder, args.seconds, args.clients)

    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        demo.interrupt()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        demo.start()
        while demo.is_alive():
            demo.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if temporary and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if demo.interrupted and (demo.error is None or isinstance(demo.error, asyncio.CancelledError)):
        print(
            "txbackup: demo interrupted: load and bank service stopped, nothing left paused",
            file=sys.stderr,
        )
        return 128 + (received[0] if received else signal.SIGINT)  # 130 on SIGINT, 143 on SIGTERM
    if demo.error is not None:
        raise demo.error
    assert demo.result is not None
    result = demo.result
    if args.json:
        print_json(result.to_json() | {"folder_kept": not temporary or args.keep})
    else:
        print(report(result, kept=not temporary or args.keep))
    return 0 if result.ok else 1


def report(result: DemoResult, kept: bool) -> str:
    """The short, readable report."""
    m, t, load = result.manifest, result.manifest.timings, result.load
    rate = load.ok / load.seconds if load.seconds else 0.0
    naive = result.naive_books.summary()
    if result.naive_books.ok:
        naive += " (by luck: no transfer was in flight between the two copies)"
    lines = [
        f"txbackup demo: a bank over two SQLite databases, {result.clients} clients, "
        f"{result.seconds:g} s of load",
        f"  transfers        {load.ok} during the run ({rate:.0f}/s; slowest {load.longest_ms:.0f} ms)",
        f"  backup set       {m.set_id}",
        f"    pausing        {t.drain_ms} ms (in-flight transfers finish first)",
        f"    pause window   {t.pause_ms} ms, measured: {m.pause.started_at} .. {_time_of(m.pause.ended_at)}",
        f"    capture        {t.capture_ms} ms, inside the pause",
        f"    export         {t.export_ms} ms, after the unpause",
        f"  naive copy       each database copied on its own, no pause ({result.naive.ms} ms)",
        f"  restored backup  {result.txbackup_books.summary()}",
        f"  restored naive   {naive}",
    ]
    if load.failed:
        lines.append(f"  warning          {load.failed} transfer calls failed (last: {load.last_error})")
    if not result.live_books.ok:
        lines.append(f"  warning          the live databases themselves: {result.live_books.summary()}")
    if kept:
        backups = Path(result.folder) / "backups"
        lines.append(f"  folder           {result.folder} (see: txbackup list --storage {backups})")
    else:
        lines.append(f"  folder           {result.folder} (removed; --keep to keep it)")
    if result.ok:
        lines.append("OK: the txbackup restore is consistent: the books balance.")
    else:
        lines.append("FAILED: the txbackup restore is NOT consistent.")
    return "\n".join(lines)


def _time_of(moment: str | None) -> str:
    """The time part of an ISO timestamp (the date is on the same line already)."""
    return (moment or "?").partition("T")[2] or (moment or "?")
