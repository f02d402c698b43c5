"""txbackup init: make a storage a repository (write its config with a new id)."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from txbackup.cli.common import add_config, add_json, add_storage_args, print_json, storage_from_args
from txbackup.config import check_places
from txbackup.errors import UsageError
from txbackup.repository.config import init_repository
from txbackup.repository.crypto import init_encrypted, new_key_from, passphrase_from
from txbackup.repository.layout import CONFIG
from txbackup.storage import open_storage

NAME = "init"
HELP = "make a storage a repository: write its config (repository id, format version, encryption)"
DESCRIPTION = f"""\
Write the repository config, the object '{CONFIG}' at the top of the storage:
a random repository id, the format version, when and by which txbackup it was
created. Every command reads it first and refuses a format version it does not
know; every manifest and catalog row records the id; Cassandra agents must
find the same id in their own storage at preflight, so an agent pointed at
another repository is refused before anything is paused.

The config is written with a conditional create: a storage that has one
already is left alone, and the command fails naming its id.

--encrypt makes an encrypted repository (age): a random repository key whose
public half (age1...) the config records, so backups need no secret; its
secret half is stored in keys/<id>, encrypted to the key you give (one or more
--recipient age1.../ssh public keys, --recipient-file, or a passphrase from
--passphrase-file/--passphrase-env). Restore, verify, show and list --rebuild
then need that key (--identity-file or the passphrase); add and remove keys
with 'txbackup key'. Lose every key and the backups are lost.

Running init is optional for a plain repository: a storage without config
keeps working, and the first backup set committed into it writes the config.
Run it before the first backup to have the id (and the agents' check) from
the first set on.

examples:
  txbackup init -c cluster.toml
  txbackup init -c cluster.toml --encrypt --recipient-file ~/.config/txbackup/key.pub
  txbackup init --storage s3://bucket/backups --storage-option region=eu-west-1 --json"""


def register(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_storage_args(parser)
    group = parser.add_argument_group("encryption")
    group.add_argument("--encrypt", action="store_true", help="make an encrypted repository (age)")
    group.add_argument(
        "--recipient", metavar="KEY", action="append", default=[],
        help="a public key (age1... or ssh-ed25519 ...) that can open the repository; repeatable",
    )
    group.add_argument(
        "--recipient-file", metavar="FILE", action="append", default=[],
        help="a file of public keys, one a line; repeatable",
    )
    group.add_argument("--passphrase-file", metavar="FILE", help="a passphrase (a file, chmod 600) instead")
    group.add_argument(
        "--passphrase-env", metavar="VAR", help="a passphrase (an environment variable) instead"
    )  # fmt: skip
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    url, options, config = storage_from_args(args)
    check_places(url, None if config is None else config.catalog, writable=True, options=options)
    passphrase = passphrase_from(args.passphrase_file, args.passphrase_env)
    new_key = new_key_from(args.recipient, args.recipient_file, passphrase)
    if new_key is not None and not args.encrypt:
        raise UsageError("a recipient or passphrase goes with --encrypt")
    if args.encrypt and new_key is None:
        raise UsageError(
            "--encrypt needs a key: --recipient age1..., --recipient-file FILE, "
            "--passphrase-file FILE or --passphrase-env VAR"
        )
    storage = open_storage(url, options)
    key_id = None
    if new_key is not None:
        made, key_id = init_encrypted(storage, new_key)
    else:
        made = init_repository(storage)
    if args.json:
        extra = {} if key_id is None else {"key_id": key_id}
        print_json({"storage": storage.describe()} | asdict(made) | extra)
    else:
        print(f"initialized repository {made.repository_id} at {storage.describe()}")
        print(f"format version {made.format_version}, {made.created_by}, {made.created_at}")
        if made.encryption is not None:
            source = "" if new_key is None else f" ({new_key.source})"
            print(f"encrypted to {made.encryption.recipient}; key {key_id} opens it{source}")
    return 0
