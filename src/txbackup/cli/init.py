"""txbackup init: make a storage a repository (write its config with a new id), or write a
cluster file from a ScalarDB configuration (``--scalardb-config``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import asdict

from txbackup import javaprops
from txbackup.cli.common import add_config, add_json, add_storage_args, print_json, storage_from_args
from txbackup.config import check_places
from txbackup.errors import UsageError
from txbackup.repository.config import init_repository
from txbackup.repository.crypto import init_encrypted, new_key_from, passphrase_from
from txbackup.repository.layout import CONFIG
from txbackup.safepaths import create_private
from txbackup.scalardb import build_cluster_file, read_config, summary
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

With --scalardb-config, init writes a cluster file instead: it reads a
ScalarDB server's database.properties (single storage, or multi-storage with
its namespace mapping) and writes one target per storage (JDBC PostgreSQL ->
postgres, MySQL/MariaDB -> mysql, Cassandra, DynamoDB, Cosmos DB), with
ScalarDB's coordinator namespace in the target of the storage holding it and
its system namespace in every target, and a [scalardb] table that makes a
backup refuse a set without them. The properties do not say which namespaces
the application uses (only the mapping names some): the file lists what is
known and TODO placeholders for the rest, and stderr says what to complete.
Passwords are never copied: targets name an environment variable
(password_env; the variable of a ${{env:NAME}} value, else a placeholder).
The file is written 0600; an existing one is replaced only with --force.

examples:
  txbackup init -c cluster.toml
  txbackup init -c cluster.toml --encrypt --recipient-file ~/.config/txbackup/key.pub
  txbackup init --storage s3://bucket/backups --storage-option region=eu-west-1 --json
  txbackup init --scalardb-config /etc/scalardb/database.properties --output cluster.toml"""


def register(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_storage_args(parser)
    parser.add_argument(
        "--scalardb-config",
        metavar="FILE",
        help="write a cluster file from this ScalarDB database.properties (no repository is made)",
    )
    parser.add_argument(
        "--output", metavar="FILE", help="with --scalardb-config: the cluster file (default cluster.toml)"
    )
    parser.add_argument("--force", action="store_true", help="with --scalardb-config: replace the output")
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
    if args.scalardb_config:
        return _from_scalardb(args)
    if args.force or args.output:
        raise UsageError("--output and --force go with --scalardb-config")
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


def _from_scalardb(args: argparse.Namespace) -> int:
    if args.config or args.storage:
        raise UsageError("--scalardb-config writes a cluster file: give no --config or --storage")
    props = javaprops.load(args.scalardb_config)
    config = read_config(props, where=f"properties file {args.scalardb_config}")
    made = build_cluster_file(config, source=args.scalardb_config)
    if not made.targets:
        raise UsageError(f"properties file {args.scalardb_config}: no storage txbackup can back up")
    output = args.output or "cluster.toml"
    write_private(output, made.text.encode(), force=args.force)
    for line in made.warnings:
        print(f"txbackup: warning: {line}", file=sys.stderr)
    if args.json:
        print_json(summary(made, output))
    else:
        names = ", ".join(f"{p.name} ({p.kind})" for p in made.targets)
        print(f"wrote {output}: targets {names}")
        if made.warnings:
            print("complete the TODO placeholders the warnings name before the first backup")
    return 0


def write_private(path: str, data: bytes, *, force: bool) -> None:
    """Write ``path`` 0600 (never through a symbolic link); an existing file only with ``force``,
    then atomically (a temporary file beside it, renamed over it)."""
    if not force:
        try:
            fd = create_private(path)
        except FileExistsError:
            raise UsageError(f"{path}: exists; give --force to replace it") from None
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a folder")
    folder, base = os.path.split(os.path.abspath(path))
    temp = os.path.join(folder, f".{base}.{os.getpid()}.tmp")
    try:
        with os.fdopen(create_private(temp), "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise UsageError(f"{path}: {exc.strerror}") from None
