"""txbackup verify: re-read every artifact of a set against its checksum."""

from __future__ import annotations

import argparse
import sys

from txbackup.cli.common import (
    add_json,
    add_key_args,
    add_repository_args,
    open_keyring,
    open_repository,
    print_json,
    set_id_arg,
)
from txbackup.engine.artifacts import verify_set
from txbackup.engine.manifest import read_manifest
from txbackup.engine.restore import check_scope
from txbackup.errors import IntegrityError

NAME = "verify"
HELP = "re-read every artifact of a backup set against its SHA-256"
DESCRIPTION = """\
Read every stored artifact of the set back, decompress it and compare its size
and SHA-256 with the manifest. Prints one line per problem, naming the file.
With --config, also checks that every database, table, keyspace, file or
account the set names for a target of the cluster file is one that target
covers (what a restore checks first).
Exit code 0: the set is intact; 1: something is missing or corrupt."""


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    parser.add_argument("set_id", metavar="ID", type=set_id_arg)
    add_key_args(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    storage, _, config = open_repository(args)
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
    problems += verify_set(storage, manifest, keyring=keyring)
    count = sum(1 for _ in manifest.artifacts())
    if args.json:
        print_json({"set_id": args.set_id, "artifacts": count, "ok": not problems, "problems": problems})
    else:
        for problem in problems:
            print(f"txbackup: {problem}", file=sys.stderr)
        if not problems:
            print(f"set {args.set_id}: {count} artifacts intact")
    return 1 if problems else 0
