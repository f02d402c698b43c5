"""txbackup init: make a storage a repository (write its config with a new id)."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from txbackup.cli.common import add_config, add_json, add_storage_args, print_json, storage_from_args
from txbackup.config import check_places
from txbackup.repository.config import init_repository
from txbackup.repository.layout import CONFIG
from txbackup.storage import open_storage

NAME = "init"
HELP = "make a storage a repository: write its config (repository id, format version)"
DESCRIPTION = f"""\
Write the repository config, the object '{CONFIG}' at the top of the storage:
a random repository id, the format version, when and by which txbackup it was
created. Every command reads it first and refuses a format version it does not
know; every manifest and catalog row records the id; Cassandra agents must
find the same id in their own storage at preflight, so an agent pointed at
another repository is refused before anything is paused.

The config is written with a conditional create: a storage that has one
already is left alone, and the command fails naming its id.

Running init is optional: a storage without config (every storage written
before txbackup had one) keeps working, and the first backup set committed
into it writes the config. Run it before the first backup to have the id (and
the agents' check) from the first set on.

examples:
  txbackup init -c cluster.toml
  txbackup init --storage s3://bucket/backups --storage-option region=eu-west-1 --json"""


def register(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_storage_args(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    url, options, config = storage_from_args(args)
    check_places(url, None if config is None else config.catalog, writable=True, options=options)
    storage = open_storage(url, options)
    made = init_repository(storage)
    if args.json:
        print_json({"storage": storage.describe()} | asdict(made))
    else:
        print(f"initialized repository {made.repository_id} at {storage.describe()}")
        print(f"format version {made.format_version}, {made.created_by}, {made.created_at}")
    return 0
