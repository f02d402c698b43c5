"""txbackup delete: remove a backup set (manifest first, then its files)."""

from __future__ import annotations

import argparse

from txbackup.catalog import delete_set
from txbackup.cli.common import add_json, add_repository_args, open_repository, print_json, set_id_arg
from txbackup.engine.retention import refuse_retained
from txbackup.errors import TxbackupError
from txbackup.repository.layout import set_prefix

NAME = "delete"
HELP = "delete a backup set from storage and the catalog"
DESCRIPTION = """\
Delete a set: its manifest first (so an interrupted delete never leaves a set
that looks complete), then its artifacts, then its catalog row. A set under S3
Object Lock retention is refused in one line before anything is removed."""


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    parser.add_argument("set_id", metavar="ID", type=set_id_arg)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    storage, catalog, _ = open_repository(args)
    if catalog.get(args.set_id) is None and next(storage.iterate(set_prefix(args.set_id)), None) is None:
        raise TxbackupError(f"set {args.set_id}: no such backup set")
    refuse_retained(storage, args.set_id)  # a set under S3 Object Lock: refused whole, first
    delete_set(storage, catalog, args.set_id)
    if args.json:
        print_json({"deleted": args.set_id})
    else:
        print(f"deleted set {args.set_id}")
    return 0
