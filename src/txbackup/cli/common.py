"""Options and output shared by several commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from txbackup.admin.client import Endpoint
from txbackup.admin.discovery import from_srv
from txbackup.admin.fleet import Fleet, Interrupted, received_signal
from txbackup.admin.kubernetes import Release, discover
from txbackup.catalog import Catalog
from txbackup.clock import as_utc, epoch_ms, iso_local, iso_ms, parse_time_zone
from txbackup.config import (
    STORAGE_OPTIONS,
    Applications,
    ClusterConfig,
    check_places,
    load_cluster,
    parse_applications,
    parse_storage_options,
)
from txbackup.durations import MAX_CALL_S, parse_duration
from txbackup.engine.manifest import check_set_id
from txbackup.errors import UsageError
from txbackup.repository.config import open_config, read_config
from txbackup.repository.crypto import (
    KEY_FLAGS,
    KeyRequired,
    Keyring,
    UserKey,
    identity_file_key,
    passphrase_from,
    unlock,
)
from txbackup.settings import resolve_path
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


def set_id_arg(text: str) -> str:
    """An argparse ``type``: a backup set id, refused (one line, exit 2) unless it has
    the shape of one, before it names anything in the storage or the catalog."""
    try:
        return check_set_id(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    """The repository named on the command line: --storage and its --storage-option."""
    parser.add_argument(
        "--storage", metavar="URL", help="the repository: a folder or a URL such as s3://bucket/prefix "
        "(instead of --config)",
    )
    parser.add_argument(
        "--storage-option", metavar="KEY=VALUE", action="append", default=[],
        help=f"a [storage] option with --storage (one of {', '.join(STORAGE_OPTIONS)}); repeatable",
    )  # fmt: skip


def add_repository_args(parser: argparse.ArgumentParser) -> None:
    """Where the backup sets are: the cluster file, or --storage (and --catalog)."""
    add_config(parser)
    add_storage_args(parser)
    parser.add_argument(
        "--catalog",
        metavar="FILE",
        help="the catalog (default: STORAGE/catalog.db for a folder, a local file of its own for a URL)",
    )


def storage_from_args(args: argparse.Namespace) -> tuple[str, dict[str, Any], ClusterConfig | None]:
    """(URL, options, cluster file) of the repository named by --config or --storage."""
    pairs = getattr(args, "storage_option", None) or []  # commands without the flag
    if args.config and args.storage:
        raise UsageError("give either --config or --storage, not both")
    if args.config:
        if pairs:
            raise UsageError("--storage-option goes with --storage; with --config, use [storage]")
        config = load_cluster(args.config)
        return config.storage, config.storage_options, config
    if not args.storage:
        raise UsageError("where are the backups? give --config FILE or --storage URL")
    return args.storage, parse_storage_options(pairs), None


def open_checked(url: str, options: Mapping[str, Any]) -> Storage:
    """The storage at ``url``, its repository config read and checked first (a newer
    format, or a malformed config, is refused in one line before anything else)."""
    storage = open_storage(url, options)
    open_config(storage)
    return storage


def open_repository(args: argparse.Namespace) -> tuple[Storage, Catalog, ClusterConfig | None]:
    """The storage and catalog named by --config or --storage/--catalog."""
    url, options, config = storage_from_args(args)
    given = config.catalog if config is not None and args.catalog is None else args.catalog
    url, catalog = check_places(url, given, options=options)
    return open_checked(url, options), Catalog(catalog), config


IDENTITY_ENV = "TXBACKUP_IDENTITY_FILE"


def add_key_args(parser: argparse.ArgumentParser) -> None:
    """How to unlock an encrypted repository: a user key (never a secret in argv)."""
    group = parser.add_argument_group("key of an encrypted repository (never given in argv)")
    group.add_argument(
        "--identity-file", metavar="FILE",
        help="an age identity file (AGE-SECRET-KEY-1...) or ssh private key, chmod 600 "
        f"(default: ${IDENTITY_ENV})",
    )
    group.add_argument("--passphrase-file", metavar="FILE", help="a file (chmod 600) holding the passphrase")
    group.add_argument(
        "--passphrase-env", metavar="VAR", help="an environment variable holding the passphrase"
    )  # fmt: skip


def user_key_from_args(args: argparse.Namespace) -> UserKey | None:
    """The user key named by --identity-file, --passphrase-file/-env or $TXBACKUP_IDENTITY_FILE."""
    passphrase = passphrase_from(args.passphrase_file, args.passphrase_env)
    if passphrase is not None and args.identity_file is not None:
        raise UsageError("give either --identity-file or a passphrase, not both")
    if passphrase is not None:
        return passphrase
    path = args.identity_file or os.environ.get(IDENTITY_ENV) or None
    return None if path is None else identity_file_key(path)


def open_keyring(args: argparse.Namespace, storage: Storage) -> Keyring | None:
    """The unlocked keyring of an encrypted repository (None if it is not encrypted);
    KeyRequired naming the flags when no key was given, WrongKey when it opens nothing."""
    config = read_config(storage)
    if config is None or config.encryption is None:
        return None
    key = user_key_from_args(args)
    if key is None:
        raise KeyRequired(
            f"repository {config.repository_id} at {storage.describe()} is encrypted: give {KEY_FLAGS}"
        )
    return unlock(storage, config.encryption.recipient, config.repository_id, key)


def add_fleet_args(parser: argparse.ArgumentParser) -> None:
    """Where the applications are: --endpoints, --srv or the cluster file."""
    group = parser.add_argument_group("applications (scalar-admin endpoints)")
    group.add_argument("-a", "--endpoints", metavar="HOST:PORT,...", help="comma-separated list")
    group.add_argument("-s", "--srv", metavar="NAME", help="a DNS SRV name listing the endpoints")
    group.add_argument("--dns-server", metavar="HOST:PORT", help="resolve --srv with this server")
    add_config(group)  # type: ignore[arg-type]
    add_k8s_args(group)  # type: ignore[arg-type]
    group.add_argument("--timeout", help="deadline of each call (default 10s, at most 1h)")
    group.add_argument("--tls", action="store_true", help="use TLS")
    group.add_argument("--ca-root-cert-path", metavar="FILE", help="CA certificate for TLS")
    group.add_argument("--override-authority", metavar="NAME", help="TLS authority override")
    group.add_argument("--tls-cert-path", metavar="FILE", help="our client certificate (PEM), for mutual TLS")
    group.add_argument(
        "--tls-key-path", metavar="FILE", help="its private key (PEM, an owner-only file: chmod 600)"
    )


def add_k8s_args(parser: argparse.ArgumentParser) -> None:
    """A Helm release on Kubernetes: its pods are the applications
    (``pip install 'txbackup[kubernetes]'``)."""
    parser.add_argument(
        "--k8s-release", metavar="NAME", action="append",
        help="a Helm release of ScalarDB Cluster or ScalarDL: pause its pods (repeatable; replaces the "
        "cluster file's applications)",
    )
    parser.add_argument(
        "--k8s-namespace", metavar="NAME",
        help="the release's namespace (default: the kubeconfig context's, else the pod's own)",
    )
    parser.add_argument(
        "--kubeconfig", metavar="FILE",
        help="a kubeconfig file (default: in a pod its service account, else $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument(
        "--k8s-context", metavar="NAME", help="the kubeconfig context (default: its current one)"
    )


def with_k8s_flags(apps: Applications, args: argparse.Namespace) -> Applications:
    """``apps`` with the Kubernetes flags applied: --k8s-release names the releases (and
    replaces the endpoints and SRV name of a cluster file); --k8s-namespace, --kubeconfig and
    --k8s-context override the cluster file's ``kubernetes`` settings."""
    given = {"--k8s-namespace": args.k8s_namespace, "--kubeconfig": args.kubeconfig,
             "--k8s-context": args.k8s_context}  # fmt: skip
    kubeconfig = None if args.kubeconfig is None else resolve_path(args.kubeconfig, None)
    try:
        if args.k8s_release:
            apps.kubernetes = [
                Release(name, args.k8s_namespace, kubeconfig, args.k8s_context) for name in args.k8s_release
            ]
            apps.endpoints, apps.srv = [], None
        elif any(v is not None for v in given.values()):
            flag = next(f for f, v in given.items() if v is not None)
            if not apps.kubernetes:
                raise UsageError(
                    f"{flag} goes with --k8s-release (or a cluster file's [applications] kubernetes)"
                )
            apps.kubernetes = [
                Release(
                    r.release,
                    args.k8s_namespace or r.namespace,
                    kubeconfig or r.kubeconfig,
                    args.k8s_context or r.context,
                )
                for r in apps.kubernetes
            ]
    except UsageError as exc:
        text = str(exc)
        for word, flag in (("release", "--k8s-release"), ("namespace", "--k8s-namespace"),
                           ("context", "--k8s-context")):  # fmt: skip
            if text.startswith(f"{word} "):
                text = f"{flag} {text.removeprefix(word + ' ')}"
        raise UsageError(text) from None
    return apps


def applications_from_args(args: argparse.Namespace) -> Applications:
    """The applications named by --config, or by --endpoints/--srv and their options, checked
    with the rules of the cluster file's [applications] table."""
    flags = {
        "--timeout": args.timeout,
        "--tls": args.tls or None,
        "--ca-root-cert-path": args.ca_root_cert_path,
        "--override-authority": args.override_authority,
        "--tls-cert-path": args.tls_cert_path,
        "--tls-key-path": args.tls_key_path,
        "--dns-server": args.dns_server,
    }
    if args.config:
        if args.endpoints or args.srv:
            raise UsageError("give either --config or --endpoints/--srv, not both")
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise UsageError(f"{given[0]} goes with --endpoints/--srv; with --config, set it in the file")
        return with_k8s_flags(load_cluster(args.config).applications, args)
    if args.k8s_release and (args.endpoints or args.srv):
        raise UsageError("give either --k8s-release or --endpoints/--srv, not both")
    if args.endpoints is None and args.srv is None and not args.k8s_release:
        raise UsageError(
            "no applications: give --endpoints HOST:PORT,..., --srv NAME, --k8s-release NAME or --config FILE"
        )
    if args.dns_server is not None and args.srv is None:
        raise UsageError("--dns-server goes with --srv")
    if (args.tls_cert_path is None) != (args.tls_key_path is None):
        raise UsageError("--tls-cert-path and --tls-key-path go together")
    conf: dict[str, Any] = {"timeout": "10s" if args.timeout is None else args.timeout}
    if args.endpoints is not None:
        conf["endpoints"] = args.endpoints
    if args.srv is not None:
        conf["srv"] = args.srv
    if args.endpoints is None and args.srv is None:
        conf["endpoints"] = []  # the applications are a release's pods
    if args.dns_server is not None:
        conf["dns_server"] = args.dns_server
    tls = {
        "ca_file": args.ca_root_cert_path,
        "override_authority": args.override_authority,
        "cert_file": args.tls_cert_path,
        "key_file": args.tls_key_path,
    }
    if args.tls or any(v is not None for v in tls.values()):
        conf["tls"] = {k: v for k, v in tls.items() if v is not None}
    try:
        apps = parse_applications(conf, base=Path.cwd())
    except UsageError as exc:  # name the flag, not the table
        raise UsageError(_as_flags(str(exc))) from None
    if apps.srv:
        apps.endpoints += from_srv(apps.srv, apps.dns_server)
        apps.srv = None
    return with_k8s_flags(apps, args)


def _as_flags(message: str) -> str:
    """A message of the [applications] reader, with the command-line names of its keys."""
    message = message.removeprefix("[applications.tls]: ").removeprefix("[applications]: ")
    names = {"endpoints": "--endpoints", "srv": "--srv", "dns_server": "--dns-server",
             "timeout": "--timeout", "ca_file": "--ca-root-cert-path",
             "override_authority": "--override-authority", "cert_file": "--tls-cert-path",
             "key_file": "--tls-key-path"}  # fmt: skip
    key = message.partition(" ")[0].rstrip(":")
    return f"{names[key]}{message[len(key) :]}" if key in names else message


def flag_duration(text: str, flag: str, maximum: float = MAX_CALL_S) -> float:
    """A duration flag bounded like its cluster-file setting (what holds or waits on a pause:
    at most 1h)."""
    try:
        return parse_duration(text, maximum=maximum)
    except UsageError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def fleet_of(apps: Applications, *, strict: bool = True) -> Fleet:
    """The fleet of ``apps``: its endpoints, the SRV name's, and every Kubernetes release's pods
    (found now: a pod not Ready or without an IP fails here, before anything is paused), with
    a window check per release that fails the pause if its pods change meanwhile.

    ``strict=False`` (status, unpause) keeps the pods that have an IP, Ready or not, and warns
    on stderr about the others: recovering from an interrupted pause must not wait for them."""
    endpoints = apps.resolve()
    watches = discover(apps.kubernetes, apps.options.timeout, strict=strict) if apps.kubernetes else []
    names: dict[Endpoint, str] = {}
    for watch in watches:
        names.update(watch.found.endpoints)
        for problem in watch.found.unreachable:
            print(f"txbackup: warning: {watch.found.release}: {problem}: left out", file=sys.stderr)
    return Fleet(endpoints + list(names), apps.options, window_checks=watches, names=names)


def fleet_from_args(args: argparse.Namespace, *, strict: bool = True) -> tuple[Fleet, Applications]:
    """The fleet named by the command line (``strict``: see :func:`fleet_of`)."""
    apps = applications_from_args(args)
    return fleet_of(apps, strict=strict), apps


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


# --- the pause window's rendering (issue 13, part 4): --time-zone, ms, ISO-8601 with offset ---


def add_time_zone(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--time-zone", metavar="ZONE", default="UTC",
        help="IANA time zone of the local times shown next to the UTC ones (e.g. Asia/Tokyo; default UTC)",
    )  # fmt: skip


def zone_from_args(args: argparse.Namespace) -> ZoneInfo:
    """The zone of --time-zone (a bad name: one-line UsageError, exit 2)."""
    return parse_time_zone(args.time_zone)


def window_lines(
    started: datetime | str | None,
    ended: datetime | str | None,
    midpoint: datetime | str | None,
    duration_ms: int | None,
    zone: ZoneInfo,
) -> list[str]:
    """The human lines of a pause window: UTC, the local zone (unless UTC), epoch ms."""
    moments = [_moment(m) for m in (started, ended, midpoint)]
    if None in moments:
        return [f"pause window   {iso_ms(moments[0]) or '-'} .. {iso_ms(moments[1]) or '-'}"]
    start, end, mid = (m for m in moments if m is not None)
    lines = [f"pause window   {iso_ms(start)} .. {iso_ms(end)} ({duration_ms} ms)"]
    if zone.key != "UTC":
        lines.append(f"               {iso_local(start, zone)} .. {iso_local(end, zone)} ({zone.key})")
    lines.append(f"               {epoch_ms(start)} .. {epoch_ms(end)} (ms since epoch)")
    local = "" if zone.key == "UTC" else f"{iso_local(mid, zone)}, "
    lines.append(f"restore point  {iso_ms(mid)} ({local}{epoch_ms(mid)} ms)")
    return lines


def _moment(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return as_utc(datetime.fromisoformat(value))  # a manifest's time: checked when it was read


def window_local(pause: Any, zone: ZoneInfo) -> dict[str, Any]:
    """A manifest's window in ``zone``: ``time_zone`` and ``*_local`` (ISO-8601 with offset)."""
    local: dict[str, Any] = {"time_zone": zone.key}
    for name in ("started_at", "ended_at", "midpoint"):
        moment = _moment(getattr(pause, name))
        local[f"{name}_local"] = None if moment is None else iso_local(moment, zone)
    return local
