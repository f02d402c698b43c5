"""txbackup key: list, add and remove the keys of an encrypted repository."""

from __future__ import annotations

import argparse

from txbackup.cli.common import (
    add_config,
    add_json,
    add_key_args,
    add_storage_args,
    open_checked,
    open_keyring,
    print_json,
    print_table,
    storage_from_args,
)
from txbackup.errors import UsageError
from txbackup.repository.config import read_config
from txbackup.repository.crypto import (
    Keyring,
    add_key,
    derive_blob_key,
    list_keys,
    new_key_from,
    passphrase_from,
    remove_key,
)
from txbackup.safepaths import open_private
from txbackup.storage.base import Storage

NAME = "key"
HELP = "list, add or remove the keys of an encrypted repository"
DESCRIPTION = """\
An encrypted repository (txbackup init --encrypt) has one repository key; it
is stored in keys/<id>, once per user key, each copy encrypted to that user
key (age recipients, an ssh public key, or a passphrase). Adding or removing a
user key rewrites no data.

  list     the key ids and how each is wrapped (X25519, ssh-ed25519, scrypt...)
  add      wrap the repository key to a new user key (--new-recipient age1...,
           --new-recipient-file FILE, --new-passphrase-file/--new-passphrase-env)
  remove   remove the key --id ID; refused for the last one, and for the key
           given to unlock (unlock with another: that proves it still opens)
  blob-key write the blob key for Cassandra agents to --output FILE (0600): it
           names their blobs (a keyed hash) and decrypts nothing

add, remove and blob-key need an existing key (--identity-file or a passphrase).

examples:
  txbackup key list -c cluster.toml
  txbackup key add -c cluster.toml --identity-file me.key --new-recipient-file colleague.pub
  txbackup key remove -c cluster.toml --identity-file me.key --id 3f9a0c1d2e4b5a69"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "add", "remove", "blob-key"], help="what to do")
    # an option, not a second positional: argparse gives an optional positional nothing
    # once options come between (key remove -c FILE ID would be refused)
    parser.add_argument("--id", dest="key_id", metavar="ID", help="remove: the key to remove (see key list)")
    add_config(parser)
    add_storage_args(parser)
    add_key_args(parser)
    group = parser.add_argument_group("add: the new key")
    group.add_argument("--new-recipient", metavar="KEY", action="append", default=[],
                       help="a public key (age1... or ssh-ed25519 ...); repeatable")
    group.add_argument("--new-recipient-file", metavar="FILE", action="append", default=[],
                       help="a file of public keys, one a line; repeatable")
    group.add_argument("--new-passphrase-file", metavar="FILE", help="a passphrase (a file, chmod 600)")
    group.add_argument("--new-passphrase-env", metavar="VAR", help="a passphrase (an environment variable)")
    parser.add_argument("--output", metavar="FILE", help="blob-key: the new file to write it to (0600)")
    add_json(parser)


def _check_args(args: argparse.Namespace) -> None:
    """Each action's flags only (before anything is opened)."""
    if (args.action == "remove") != (args.key_id is not None):
        raise UsageError("key remove takes --id ID (see key list); the other actions take no --id")
    new = args.new_recipient or args.new_recipient_file or args.new_passphrase_file or args.new_passphrase_env
    if new and args.action != "add":
        raise UsageError(f"--new-* flags go with key add, not key {args.action}")
    if (args.action == "blob-key") != (args.output is not None):
        raise UsageError("key blob-key writes to --output FILE (and only it takes --output)")


def _open(args: argparse.Namespace) -> tuple[Storage, str]:
    url, options, _ = storage_from_args(args)
    storage = open_checked(url, options)
    config = read_config(storage)
    if config is None or config.encryption is None:
        raise UsageError(f"storage {storage.describe()} is not an encrypted repository: it has no keys")
    return storage, config.repository_id


def _unlocked(args: argparse.Namespace, storage: Storage) -> Keyring:
    keyring = open_keyring(args, storage)
    assert keyring is not None  # _open checked that the repository is encrypted
    return keyring


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    storage, repository_id = _open(args)
    if args.action == "list":
        keys = list_keys(storage)
        if args.json:
            print_json([key.__dict__ for key in keys])
        else:
            print_table(["KEY", "KIND", "CREATED"], [[k.key_id, k.kind, k.created] for k in keys])
        return 0
    keyring = _unlocked(args, storage)
    if args.action == "blob-key":
        blob_key = derive_blob_key(keyring, repository_id)
        try:
            with open_private(args.output) as out:
                out.write(blob_key.text())
        except FileExistsError:
            raise UsageError(f"--output {args.output}: exists already (not overwritten)") from None
        except OSError as exc:
            raise UsageError(f"--output {args.output}: {exc.strerror}") from None
        if args.json:
            print_json({"blob_key_file": args.output, "repository_id": repository_id})
        else:
            print(f"wrote the blob key of repository {repository_id} to {args.output}: give it to the agents")
        return 0
    if args.action == "add":
        passphrase = passphrase_from(args.new_passphrase_file, args.new_passphrase_env, "--new-passphrase")
        new = new_key_from(args.new_recipient, args.new_recipient_file, passphrase)
        if new is None:
            raise UsageError(
                "which key to add? give --new-recipient, --new-recipient-file, "
                "--new-passphrase-file or --new-passphrase-env"
            )
        key_id = add_key(storage, keyring, repository_id, new)
        if args.json:
            print_json({"added": key_id, "repository_id": repository_id})
        else:
            print(f"added key {key_id} ({new.source}) to repository {repository_id}")
        return 0
    remove_key(storage, keyring, args.key_id)
    if args.json:
        print_json({"removed": args.key_id, "repository_id": repository_id})
    else:
        print(f"removed key {args.key_id} from repository {repository_id}")
    return 0
