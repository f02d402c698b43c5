"""txbackup verify: check a set's artifacts and the blobs it references (engine.verify)."""

from __future__ import annotations

import argparse
import sys
import time

from txbackup.cli.common import (
    add_json,
    add_key_args,
    add_repository_args,
    open_keyring,
    open_repository,
    print_json,
    set_id_arg,
)
from txbackup.cli.runmetrics import Run, add_metrics_arg, run_recorded
from txbackup.engine.manifest import read_manifest
from txbackup.engine.progress import human_size
from txbackup.engine.restore import check_scope
from txbackup.engine.verify import verify
from txbackup.errors import IntegrityError, UsageError

NAME = "verify"
HELP = "check that a backup set is complete and intact (--read-data: read it all back)"
DESCRIPTION = """\
Without options (cheap, downloads no data): every artifact of the set and every
SSTable blob a Cassandra set references exists with the recorded stored size,
and where the storage keeps a SHA-256 of what it stored (S3 objects under
8 MiB) that it is the one the manifest recorded. A byte flipped inside an
object passes this check on a local folder, Azure or GCS: use --read-data.

--read-data reads every object back, decompresses (and decrypts) it and
compares its sizes and SHA-256 with the manifest (blobs: with their names),
as a restore does first. --read-data-subset N% reads a random N% of the
objects (and checks the others as without options): a few runs cover a
large repository.

With --config, also checks that every database, table, keyspace, file or
account the set names for a target of the cluster file is one that target
covers (what a restore checks first). Prints one line per problem, naming
the object. Progress of --read-data goes to stderr.
Exit code 0: the set is intact; 1: something is missing or corrupt."""


def percent_arg(text: str) -> float:
    """``N%`` (or ``N``), 0 < N <= 100, as a fraction."""
    number = text.removesuffix("%")
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100 or number != number.strip():
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a percentage such as 10%")
    return value / 100


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    parser.add_argument("set_id", metavar="ID", type=set_id_arg)
    level = parser.add_mutually_exclusive_group()
    level.add_argument(
        "--read-data", action="store_true", help="read every object back and check its SHA-256"
    )
    level.add_argument(
        "--read-data-subset", metavar="N%", type=percent_arg,
        help="read a random N%% of the objects back (the others: as without options)",
    )  # fmt: skip
    add_key_args(parser)
    add_metrics_arg(parser)
    add_json(parser)


class _Progress:
    """``verified X of Y`` on stderr, at most every ``interval`` seconds."""

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self._last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval or done >= total:
            self._last = now
            print(f"    read {human_size(done)} of {human_size(total)}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    return run_recorded(NAME, args, _run)  # metrics of every outcome, when configured


def _run(args: argparse.Namespace, metrics: Run) -> int:
    if args.read_data and args.read_data_subset is not None:
        raise UsageError("verify: give --read-data or --read-data-subset, not both")
    storage, _, config = open_repository(args)
    if config is not None:
        metrics.configure(config.metrics)
    keyring = open_keyring(args, storage)  # an encrypted repository: decrypt to verify
    manifest = read_manifest(storage, args.set_id, keyring=keyring)
    problems = []
    configured = {t.name: t for t in config.targets} if config is not None else {}
    for record in manifest.targets:
        target = configured.get(record.name)
        if target is not None and target.kind == record.kind:
            try:
                check_scope(manifest.set_id, record, target)
            except IntegrityError as exc:
                problems.append(str(exc))
    progress = None if args.json else _Progress()
    result = verify(
        storage, manifest, read_data=args.read_data, subset=args.read_data_subset, progress=progress,
        keyring=keyring,
    )
    problems += result.problems
    if args.json:
        print_json(
            {
                "set_id": args.set_id,
                "level": result.level,
                "artifacts": result.artifacts,
                "blobs": result.blobs,
                "read": result.read,
                "checksums": result.checksums,
                "bytes_read": result.bytes_read,
                "ok": not problems,
                "problems": problems,
            }
        )
    else:
        for problem in problems:
            print(f"txbackup: {problem}", file=sys.stderr)
        if not problems:
            blobs = f" and {result.blobs} blobs" if result.blobs else ""
            confirmed = f", {result.checksums} SHA-256 confirmed by the storage" if result.checksums else ""
            how = {
                "plain": f"present with their recorded sizes{confirmed}; not read (--read-data reads them)",
                "read-data": "read back and checked",
                "read-data-subset": f"present, {result.read} of them read back and checked",
            }[result.level]
            print(f"set {args.set_id}: {result.artifacts} artifacts{blobs} intact ({how})")
    return 1 if problems else 0
