"""The ``txbackup`` command: one module per sub-command.

Each command module defines ``NAME``, ``HELP``, ``register(parser)`` (adds its
arguments) and ``run(args) -> int``. Errors derived from ``TxbackupError`` end
the command with one line on stderr and a non-zero exit code.

Signals end a command cleanly (``finally`` blocks and exit handlers run, so
applications are unpaused and temporary files removed): SIGINT exits 130,
SIGTERM 143 (128 + the signal's number, as shells report it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType, ModuleType
from typing import NoReturn

from txbackup import __version__
from txbackup.errors import TxbackupError
from txbackup.secrets import redact

# gRPC's own log lines (a refused TLS handshake is logged at INFO) would break the one-line
# errors; set before any command module imports grpc. An operator's own setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# The order here is the order of `txbackup --help`.
COMMAND_MODULES = [
    "demo",
    "init",
    "key",
    "backup",
    "restore",
    "verify",
    "audit",
    "drill",
    "list",
    "show",
    "delete",
    "forget",
    "prune",
    "cleanup",
    "unlock",
    "pause",
    "unpause",
    "status",
    "sample_server",
    "agent",
]

DESCRIPTION = """\
Transactionally-consistent backups of every database under a transactional
layer such as ScalarDB: pause the applications through scalar-admin, capture
every database inside the pause, unpause, export, and restore them all to one
consistent point."""


def _commands() -> list[ModuleType]:
    return [importlib.import_module(f"txbackup.cli.{name}") for name in COMMAND_MODULES]


def _one_line(text: str) -> str:
    """An error message on one line, whatever it holds."""
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip()) or "error"


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes are one line on stderr (and exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("txbackup").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"txbackup: {where}{_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="txbackup",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"txbackup {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _commands():
        cmd = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.register(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that ``finally`` blocks run."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` (not the default: dying on the spot, leaving debris).
    Commands that own their signals (servers, the async engine) install their own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # the progress of long waits on a cloud service (a restore to a point can take hours):
    # shown without -v, one line a minute, so a long wait never looks like a hang
    logging.getLogger("txbackup.targets.pitr.polling").setLevel(logging.INFO)
    try:
        with _sigterm_raises():
            code: int = args._run(args)
        return code
    except TxbackupError as exc:
        print(f"txbackup: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("txbackup: interrupted by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated:
        print("txbackup: interrupted by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as exc:
        # The last line of defence, not a way to validate: every error a user or a
        # server can cause has its own one-line TxbackupError. A bug still gets one
        # line (its traceback with -v), never a secret it may hold.
        if args.verbose:
            traceback.print_exc()
        detail = f"{type(exc).__name__}: {redact(_one_line(str(exc)))}"
        print(f"txbackup: unexpected error: {detail} (run with -v for the traceback)", file=sys.stderr)
        return 1
