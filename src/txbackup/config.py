"""The cluster file (TOML) -> typed, validated objects.

See the README for a commented example. Credentials never live in this file:
targets name an environment variable (``password_env``) or a file
(``password_file``) instead.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txbackup.admin.client import ClientOptions, Endpoint, TlsOptions
from txbackup.admin.discovery import from_list, from_srv
from txbackup.durations import parse_duration
from txbackup.errors import UsageError
from txbackup.targets.base import Target

# kind -> module implementing it (each exposes ``from_config(name, conf)``)
TARGET_KINDS = {
    "postgres": "txbackup.targets.postgres",
    "mysql": "txbackup.targets.mysql",
    "sqlite": "txbackup.targets.sqlite",
    "cassandra": "txbackup.targets.cassandra",
    "dynamodb": "txbackup.targets.dynamodb",
    "cosmos": "txbackup.targets.cosmos",
}


@dataclass
class Applications:
    """The scalar-admin endpoints to pause, and how to pause them."""

    endpoints: list[Endpoint] = field(default_factory=list)
    srv: str | None = None
    dns_server: str | None = None
    options: ClientOptions = field(default_factory=ClientOptions)
    wait_outstanding: bool = True
    max_pause_wait_ms: int | None = None

    def resolve(self) -> list[Endpoint]:
        """The endpoints, looking the SRV name up now when one is configured."""
        found = list(self.endpoints)
        if self.srv:
            found += from_srv(self.srv, self.dns_server)
        return found


@dataclass
class ClusterConfig:
    path: Path
    applications: Applications
    targets: list[Target]
    storage: str
    catalog: str
    capture_deadline_s: float = 30.0
    min_pause_s: float = 0.0


def _section(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}: [{key}] must be a table")
    return value


def parse_applications(conf: Mapping[str, Any], where: str = "[applications]") -> Applications:
    endpoints = conf.get("endpoints", [])
    if isinstance(endpoints, str):
        parsed = from_list(endpoints)
    elif isinstance(endpoints, list):
        parsed = [Endpoint.parse(str(e)) for e in endpoints]
    else:
        raise UsageError(f"{where}: endpoints must be a list of host:port")
    tls_conf = conf.get("tls")
    tls = None
    if isinstance(tls_conf, Mapping):
        tls = TlsOptions(
            ca_file=tls_conf.get("ca_file"),
            ca_pem=tls_conf.get("ca_pem"),
            override_authority=tls_conf.get("override_authority"),
        )
    elif tls_conf:
        tls = TlsOptions()
    max_wait = conf.get("max_pause_wait")
    return Applications(
        endpoints=parsed,
        srv=conf.get("srv"),
        dns_server=conf.get("dns_server"),
        options=ClientOptions(timeout=parse_duration(str(conf.get("timeout", "10s"))), tls=tls),
        wait_outstanding=bool(conf.get("wait_outstanding", True)),
        max_pause_wait_ms=None if max_wait is None else round(parse_duration(str(max_wait)) * 1000),
    )


def build_target(conf: Mapping[str, Any], index: int) -> Target:
    name = conf.get("name")
    kind = conf.get("kind")
    if not isinstance(name, str) or not name:
        raise UsageError(f"[[targets]] #{index + 1}: a target needs a name")
    if kind not in TARGET_KINDS:
        known = ", ".join(sorted(TARGET_KINDS))
        raise UsageError(f"target {name!r}: unknown kind {kind!r} (known: {known})")
    module = importlib.import_module(TARGET_KINDS[kind])
    target: Target = module.from_config(name, conf)
    return target


def _near(file: Path, value: object) -> str:
    """A path relative to the cluster file's folder (URLs and absolute paths as they are)."""
    text = str(value)
    return text if "://" in text else str(file.parent / text)


def load_cluster(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster file; relative paths are relative to it."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise UsageError(f"cluster file {file}: not found") from None
    except OSError as exc:
        raise UsageError(f"cluster file {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cluster file {file}: {exc}") from None
    where = f"cluster file {file}"
    apps = parse_applications(_section(data, "applications", where))
    raw_targets = data.get("targets", [])
    if not isinstance(raw_targets, list) or not raw_targets:
        raise UsageError(f"{where}: no [[targets]]")
    targets = [build_target(t, i) for i, t in enumerate(raw_targets)]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: target names must be unique ({', '.join(names)})")
    storage = _near(file, _section(data, "storage", where).get("path", "backups"))
    catalog = _near(file, _section(data, "catalog", where).get("path", str(Path(storage) / "catalog.db")))
    backup = _section(data, "backup", where)
    return ClusterConfig(
        path=file,
        applications=apps,
        targets=targets,
        storage=storage,
        catalog=catalog,
        capture_deadline_s=parse_duration(str(backup.get("capture_deadline", "30s"))),
        min_pause_s=parse_duration(str(backup.get("min_pause", "0s"))),
    )
