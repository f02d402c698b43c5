"""txbackup list: the backup sets in the catalog."""

from __future__ import annotations

import argparse
import sys

from txbackup.cli.common import add_json, add_repository_args, open_repository, print_json, print_table

NAME = "list"
HELP = "list the backup sets (complete, running, failed)"
DESCRIPTION = """\
List the backup sets recorded in the catalog, oldest first. Only sets whose
status is "complete" have a manifest and can be restored; "running" means the
backup is in progress or was killed; "failed" says why.

--rebuild first rebuilds the catalog from the manifests in storage (after
losing the catalog file, or to pick up sets copied in by hand)."""


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the catalog from storage first")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    storage, catalog, _ = open_repository(args)
    if args.rebuild:
        for problem in catalog.rebuild(storage):
            print(f"txbackup: warning: {problem}", file=sys.stderr)
    rows = catalog.list()
    if args.json:
        print_json([row.__dict__ for row in rows])
    else:
        print_table(
            ["SET", "STATUS", "CREATED", "RESTORE POINT", "TARGETS", "ERROR"],
            [[r.set_id, r.status, r.created_at, r.restore_point, ",".join(r.targets), r.error] for r in rows],
        )
    return 0
