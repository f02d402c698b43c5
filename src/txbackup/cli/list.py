"""txbackup list: the backup sets in the catalog."""

from __future__ import annotations

import argparse
import sys

from txbackup.catalog import CatalogCorrupt, move_aside
from txbackup.cli.common import (
    add_json,
    add_key_args,
    add_repository_args,
    open_keyring,
    open_repository,
    print_json,
    print_table,
)

NAME = "list"
HELP = "list the backup sets (complete, running, failed)"
DESCRIPTION = """\
List the backup sets recorded in the catalog, oldest first. Only sets whose
status is "complete" have a manifest and can be restored; "running" means the
backup is in progress or was killed; "failed" says why.

--rebuild first rebuilds the catalog from the manifests in storage (after
losing the catalog file, or to pick up sets copied in by hand). A catalog file
that is corrupt is first moved aside (CATALOG.corrupt-<UTC time>), then a new
one is built. A malformed row is skipped with a warning. In an encrypted
repository, --rebuild needs the key (the manifests are encrypted)."""


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the catalog from storage first")
    add_key_args(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    try:
        return _list(args)
    except CatalogCorrupt as exc:
        if not args.rebuild:
            raise
        aside = move_aside(exc.path)
        print(f"txbackup: warning: catalog {exc.path} is corrupt, moved aside to {aside}", file=sys.stderr)
        return _list(args)


def _list(args: argparse.Namespace) -> int:
    storage, catalog, _ = open_repository(args)
    if args.rebuild:
        for problem in catalog.rebuild(storage, open_keyring(args, storage)):
            print(f"txbackup: warning: {problem}", file=sys.stderr)
    rows = catalog.list()
    for problem in catalog.problems:
        print(f"txbackup: warning: {problem}", file=sys.stderr)
    if args.json:
        print_json([row.__dict__ for row in rows])
    else:
        print_table(
            ["SET", "STATUS", "CREATED", "RESTORE POINT", "TARGETS", "ERROR"],
            [
                [r.set_id, r.status, r.created_at, r.restore_point, ",".join(r.targets), r.error or r.warning]
                for r in rows
            ],
        )
    return 0
