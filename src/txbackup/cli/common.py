"""Options and output shared by several commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from txbackup.admin.client import ClientOptions, TlsOptions
from txbackup.admin.discovery import from_list, from_srv
from txbackup.admin.fleet import Fleet, Interrupted, received_signal
from txbackup.catalog import Catalog
from txbackup.config import Applications, ClusterConfig, load_cluster
from txbackup.durations import parse_duration
from txbackup.errors import UsageError
from txbackup.storage import Storage, open_storage

T = TypeVar("T")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="answer in JSON on stdout")


def add_config(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        required=required,
        help="the cluster file (TOML): applications, targets, storage, catalog",
    )


def add_repository_args(parser: argparse.ArgumentParser) -> None:
    """Where the backup sets are: the cluster file, or --storage (and --catalog)."""
    add_config(parser)
    parser.add_argument("--storage", metavar="PATH", help="the storage folder (instead of --config)")
    parser.add_argument("--catalog", metavar="FILE", help="the catalog (default: STORAGE/catalog.db)")


def open_repository(args: argparse.Namespace) -> tuple[Storage, Catalog, ClusterConfig | None]:
    """The storage and catalog named by --config or --storage/--catalog."""
    if args.config and args.storage:
        raise UsageError("give either --config or --storage, not both")
    if args.config:
        config = load_cluster(args.config)
        return open_storage(config.storage), Catalog(args.catalog or config.catalog), config
    if not args.storage:
        raise UsageError("where are the backups? give --config FILE or --storage PATH")
    return open_storage(args.storage), Catalog(args.catalog or str(Path(args.storage) / "catalog.db")), None


def add_fleet_args(parser: argparse.ArgumentParser) -> None:
    """Where the applications are: --endpoints, --srv or the cluster file."""
    group = parser.add_argument_group("applications (scalar-admin endpoints)")
    group.add_argument("-a", "--endpoints", metavar="HOST:PORT,...", help="comma-separated list")
    group.add_argument("-s", "--srv", metavar="NAME", help="a DNS SRV name listing the endpoints")
    group.add_argument("--dns-server", metavar="HOST:PORT", help="resolve --srv with this server")
    add_config(group)  # type: ignore[arg-type]
    group.add_argument("--timeout", default="10s", help="deadline of each call (default 10s)")
    group.add_argument("--tls", action="store_true", help="use TLS")
    group.add_argument("--ca-root-cert-path", metavar="FILE", help="CA certificate for TLS")
    group.add_argument("--override-authority", metavar="NAME", help="TLS authority override")


def applications_from_args(args: argparse.Namespace) -> Applications:
    if args.config and (args.endpoints or args.srv):
        raise UsageError("give either --config or --endpoints/--srv, not both")
    if args.config:
        return load_cluster(args.config).applications
    if not (args.endpoints or args.srv):
        raise UsageError("no applications: give --endpoints HOST:PORT,..., --srv NAME or --config FILE")
    tls = None
    if args.tls or args.ca_root_cert_path or args.override_authority:
        tls = TlsOptions(ca_file=args.ca_root_cert_path, override_authority=args.override_authority)
    endpoints = from_list(args.endpoints) if args.endpoints else []
    if args.srv:
        endpoints += from_srv(args.srv, args.dns_server)
    return Applications(
        endpoints=endpoints,
        options=ClientOptions(timeout=parse_duration(args.timeout), tls=tls),
    )


def fleet_from_args(args: argparse.Namespace) -> tuple[Fleet, Applications]:
    apps = applications_from_args(args)
    return Fleet(apps.resolve() if apps.srv else apps.endpoints, apps.options), apps


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a cancellation (signal) becomes a clear error."""
    try:
        return asyncio.run(coro)
    except asyncio.CancelledError:
        raise Interrupted(received_signal(), " (nothing left paused)") from None


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
