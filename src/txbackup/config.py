"""The cluster file (TOML) -> typed, validated objects.

See the README for a commented example. Every table is declared once below
(:data:`APPLICATIONS`, :data:`STORAGE`, ...) and read through
:class:`txbackup.settings.Table`: unknown keys, wrong types and out-of-bound
values are refused when the file is loaded, before anything is paused.
Relative paths are relative to the file. Credentials never live in this file:
targets and ``[restore.NAME]`` sections name an environment variable
(``password_env``) or a file (``password_file``) instead.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txbackup.admin.client import ClientOptions, Endpoint, TlsOptions
from txbackup.admin.discovery import check_dns_server, check_srv_name, from_list, from_srv
from txbackup.admin.kubernetes import Release
from txbackup.durations import MAX_CALL_S
from txbackup.errors import UsageError
from txbackup.extras import import_extra
from txbackup.metrics import check_job, check_pushgateway, check_textfile
from txbackup.safepaths import read_small_file
from txbackup.safepaths import shown as shown_text
from txbackup.secrets import check_dsn, dsn_secret
from txbackup.settings import (
    Setting,
    Table,
    check_keys,
    check_name,
    nearest,
    resolve_paths,
    setting_optional_name,
)
from txbackup.storage import LocalStorage, Storage, open_storage
from txbackup.storage.retry import RetryStorage
from txbackup.targets.base import Target

# kind -> module implementing it (each exposes ``from_config(name, conf)``)
TARGET_KINDS = {
    "postgres": "txbackup.targets.postgres.target",
    "mysql": "txbackup.targets.mysql.target",
    "sqlite": "txbackup.targets.sqlite.target",
    "cassandra": "txbackup.targets.cassandra.target",
    "dynamodb": "txbackup.targets.dynamodb",
    "cosmos": "txbackup.targets.cosmos",
    "rds": "txbackup.targets.rds",
    "azure-postgres": "txbackup.targets.azuredb.postgres",
    "azure-mysql": "txbackup.targets.azuredb.mysql",
}

MAX_FILE_BYTES = 4 << 20
"""A cluster file larger than this is not one (a wrong path, a device)."""


@dataclass
class Applications:
    """The scalar-admin endpoints to pause, and how to pause them."""

    endpoints: list[Endpoint] = field(default_factory=list)
    srv: str | None = None
    dns_server: str | None = None
    options: ClientOptions = field(default_factory=ClientOptions)
    wait_outstanding: bool = True
    max_pause_wait_ms: int | None = None
    kubernetes: list[Release] = field(default_factory=list)
    """Helm releases whose pods are found through the Kubernetes API when the fleet is built."""

    def resolve(self) -> list[Endpoint]:
        """The endpoints, looking the SRV name up now when one is configured."""
        found = list(self.endpoints)
        if self.srv:
            found += from_srv(self.srv, self.dns_server)
        return found


@dataclass(frozen=True)
class MetricsConfig:
    """The ``[metrics]`` table: a node-exporter textfile, a Pushgateway, or both."""

    textfile: str | None = None
    pushgateway: str | None = None
    job: str = "txbackup"
    timeout_s: float = 10.0


@dataclass
class ClusterConfig:
    path: Path
    applications: Applications
    targets: list[Target]
    storage: str
    catalog: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    """The ``[storage]`` options given (only those), for ``open_storage``."""
    capture_deadline_s: float = 30.0
    min_pause_s: float = 0.0
    scalardb: dict[str, Any] | None = None
    """The ``[scalardb]`` table (read), when the file has one."""
    restore: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``[restore.NAME]`` sections: target name -> destination settings (``dsn``, ``host``...,
    secret-free) and ``password`` (the ``password_env``/``password_file`` mapping, or {})."""
    drill: dict[str, Any] | None = None
    """The ``[drill]`` table (read): ``targets`` as :attr:`restore`, ``checks``, ``command``,
    ``timeout``; None when the file has none."""
    metrics: MetricsConfig = field(default_factory=lambda: MetricsConfig())
    """Where each run's metrics go (``[metrics]``): nowhere unless configured."""

    def coordinator(self) -> tuple[str, str] | None:
        """(target, namespace) of ScalarDB's coordinator, when ``[scalardb]`` places one."""
        if not self.scalardb or not self.scalardb["coordinator_namespace"]:
            return None
        return str(self.scalardb["coordinator_target"]), str(self.scalardb["coordinator_namespace"])


# -- the declared tables -----------------------------------------------------------------------------
def _endpoints(conf: Mapping[str, Any], key: str, culprit: str, base: Path | None) -> list[Endpoint]:
    value = conf.get(key, [])
    try:
        if isinstance(value, str):
            return from_list(value)
        if isinstance(value, list) and all(isinstance(e, str) for e in value):
            return [Endpoint.parse(e) for e in value]
    except UsageError as exc:
        raise UsageError(f"{culprit}: {key}: {exc}") from None
    raise UsageError(f"{culprit}: {key} must be a list of host:port strings")


def _srv(conf: Mapping[str, Any], key: str, culprit: str, base: Path | None) -> str | None:
    return None if key not in conf else check_srv_name(conf[key], what=f"{culprit}: {key}")


def _dns_server(conf: Mapping[str, Any], key: str, culprit: str, base: Path | None) -> str | None:
    if key not in conf:
        return None
    return str(check_dns_server(conf[key], what=f"{culprit}: {key}"))


TLS = Table(
    "[applications.tls]",
    (
        Setting("ca_file", "path", help="the CA certificate (PEM) that signed the servers' certificates"),
        Setting("ca_pem", "text", help="the CA certificate itself (PEM text)"),
        Setting("override_authority", "str", help="the name expected in the servers' certificates"),
        Setting("cert_file", "path", help="our client certificate chain (PEM), for mutual TLS"),
        Setting("key_file", "path", help="the client certificate's private key (PEM, chmod 600)"),
    ),
)


def _tls(conf: Mapping[str, Any], key: str, culprit: str, base: Path | None) -> TlsOptions | None:
    value = conf.get(key)
    if value is None or value is False:
        return None
    if value is True:
        return TlsOptions()
    if not isinstance(value, Mapping):
        raise UsageError(f"{culprit}: {key} must be true, false or a [applications.tls] table")
    where = culprit.removesuffix("[applications]").strip()
    read = TLS.read(value, where=where, base=base)
    tls_culprit = f"{where} {TLS.title}".strip()
    try:
        tls = TlsOptions(**read)
        tls.load()  # every file read and checked now, before anything is paused
    except UsageError as exc:
        raise UsageError(f"{tls_culprit}: {exc}") from None
    return tls


KUBERNETES = Table(
    "[applications] kubernetes",
    (
        Setting("release", "str", required=True, help="the Helm release (label app.kubernetes.io/instance)"),
        Setting("namespace", "str", help="its namespace (default: the kubeconfig context's, else the pod's)"),
        Setting("kubeconfig", "path", help="a kubeconfig file (default: in a pod its service account, "
                "else $KUBECONFIG or ~/.kube/config)"),
        Setting("context", "str", help="the kubeconfig context to use (default: its current one)"),
    ),
)  # fmt: skip


def _kubernetes(conf: Mapping[str, Any], key: str, culprit: str, base: Path | None) -> list[Release]:
    """``kubernetes = { release = "scalardb", namespace = "prod" }``, or a list of such tables
    (ScalarDL's ledger and auditor are two releases paused together)."""
    value = conf.get(key)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    where = culprit.removesuffix("[applications]").strip()
    releases = []
    for i, item in enumerate(items):
        title = KUBERNETES.title if len(items) == 1 else f"{KUBERNETES.title} #{i + 1}"
        if not isinstance(item, Mapping):
            raise UsageError(
                f"{culprit}: {key} must be a table {{ release = ..., namespace = ... }} or a list of them"
            )
        read = KUBERNETES.read(item, where=where, base=base, title=title)
        try:
            releases.append(Release(**read))
        except UsageError as exc:
            raise UsageError(f"{where} {title}: {exc}".strip()) from None
    names = [(r.release, r.namespace) for r in releases]
    if len(set(names)) != len(names):
        raise UsageError(f"{culprit}: {key} names a release twice")
    return releases


APPLICATIONS = Table(
    "[applications]",
    (
        Setting("endpoints", "custom", help="host:port of each scalar-admin server", read=_endpoints),
        Setting("srv", "custom", help="a DNS SRV name listing the endpoints", read=_srv),
        Setting("dns_server", "custom", help="the DNS server (ip:port) that resolves srv", read=_dns_server),
        Setting(
            "timeout", "duration", "10s", "the deadline of each scalar-admin call",
            minimum=0.001, maximum=MAX_CALL_S,
        ),
        Setting("wait_outstanding", "bool", True, "let in-flight requests finish before the pause"),
        Setting(
            "max_pause_wait", "duration", help="how long a server may wait for in-flight requests",
            maximum=MAX_CALL_S,
        ),
        Setting("tls", "custom", help="true, or a [applications.tls] table", read=_tls),
        Setting(
            "kubernetes", "custom", read=_kubernetes,
            help="a Helm release whose pods are paused: { release, namespace, kubeconfig, context }",
        ),
    ),
)  # fmt: skip
STORAGE = Table(
    "[storage]",
    (
        Setting(
            "path", "path", "backups",
            "a local folder, or a URL: file:///path, s3://bucket/prefix, az://container/prefix,"
            " gs://bucket/prefix",
        ),
        # the backend's options (never credentials: those come from each cloud's own
        # environment and credential chain); each reaches open_storage(url, options)
        Setting(
            "endpoint", "str",
            help="the object store's endpoint URL (S3-compatible stores, emulators, sovereign clouds)",
        ),
        Setting("region", "str", help="the bucket's region"),
        Setting("path_style", "bool", help="address the bucket in the path (S3-compatible stores)"),
        Setting("storage_class", "str", help="the storage class of new objects"),
        Setting("sse_kms_key_id", "str", help="the KMS key that encrypts new objects (SSE-KMS)"),
        Setting(
            "object_lock_days", "int", minimum=1, maximum=36_500,
            help="S3 Object Lock: keep every object of a committed set immutable this many days",
        ),
        Setting(
            "object_lock_mode", "str",
            help='S3 Object Lock mode with object_lock_days: "compliance" (default) or "governance"',
        ),
        Setting("account", "str", help="the Azure storage account (else AZURE_STORAGE_ACCOUNT)"),
    ),
)
STORAGE_OPTIONS = tuple(s.key for s in STORAGE.settings if s.key != "path")
"""The ``[storage]`` keys that are backend options (``--storage-option KEY=VALUE``)."""
CATALOG = Table(
    "[catalog]",
    (
        Setting(
            "path", "path",
            help="the catalog; default: <storage>/catalog.db for a local storage, else a file "
            "under $XDG_STATE_HOME/txbackup/ (see default_catalog)",
        ),
    ),
)  # fmt: skip
BACKUP = Table(
    "[backup]",
    (
        Setting(
            "capture_deadline", "duration", "30s", "capture must finish within this",
            minimum=0.001, maximum=MAX_CALL_S,
        ),
        Setting("min_pause", "duration", "0s", "hold the pause at least this long", maximum=MAX_CALL_S),
    ),
)  # fmt: skip
RESTORE = Table(
    "[restore.NAME]",
    (
        Setting("dsn", "str", help="where target NAME is restored by default (as --to NAME=DSN)"),
        Setting("host", "str", help="the destination server's host"),
        Setting("port", "int", help="the destination server's port", minimum=1, maximum=65535),
        Setting("user", "str", help="the user to restore as"),
        Setting("database", "str", help="the destination database"),
        Setting("path", "path", help="an SQLite destination file"),
        Setting("dir", "path", help="a folder receiving every SQLite file"),
        Setting("password", "secret", help="the destination's password"),
        Setting(
            "rename", "custom", read=lambda conf, key, culprit, base: _read_rename(conf, culprit),
            help="databases restored under other names: { old = \"new\" } (mysql, postgres)",
        ),
    ),
)
SCALARDB = Table(
    "[scalardb]",
    (
        Setting(
            "coordinator_namespace", "custom",
            help="ScalarDB's coordinator namespace (scalar.db.consensus_commit.coordinator.namespace;"
            ' "" for a transaction manager without one)',
            read=lambda conf, key, culprit, base: _optional_name(conf, key, "coordinator", culprit),
        ),
        Setting("coordinator_target", "str", help="the target whose storage holds the coordinator namespace"),
        Setting(
            "system_namespace", "str", "scalardb",
            "ScalarDB's system namespace (scalar.db.system_namespace_name), kept in every storage",
        ),
        Setting("group_commit", "bool", False, "ScalarDB's coordinator group commit is on"),
    ),
)  # fmt: skip
SCALARDB_KEYS = {
    "postgres": ("coordinator_namespace", "system_namespace"),
    "mysql": ("coordinator_database", "system_database"),
    "cassandra": ("coordinator_keyspace", "system_keyspace"),
    "cosmos": ("coordinator_database", "system_database"),
    "dynamodb": ("coordinator_table", ""),
    "sqlite": ("", ""),
    "rds": ("", ""),
    "azure-postgres": ("", ""),
    "azure-mysql": ("", ""),
}
"""Each kind's settings naming ScalarDB's coordinator and system namespace ("": the kind has
none; an SQLite file holds every namespace, a DynamoDB target lists the system tables)."""


def _read_command(conf: Mapping[str, Any], culprit: str) -> list[str]:
    """``command = ["argv0", "arg", ...]``: run without a shell (so nothing is re-parsed)."""
    value = conf.get("command", [])
    if not isinstance(value, list) or not all(isinstance(a, str) and "\0" not in a for a in value):
        raise UsageError(f'{culprit}: command must be a list of strings, e.g. ["/usr/local/bin/check", "-v"]')
    if value and not value[0]:
        raise UsageError(f"{culprit}: command: the program (first item) is empty")
    return list(value)


def _read_checks(conf: Mapping[str, Any], culprit: str, base: Path | None) -> list[dict[str, Any]]:
    """``[[drill.checks]]``: SQL queries run in a drill place, each with what it must answer."""
    value = conf.get("checks", [])
    if not isinstance(value, list):
        raise UsageError(f"{culprit}: checks must be [[drill.checks]] tables")
    checks = []
    for i, item in enumerate(value):
        read = DRILL_CHECK.read(item, where=culprit, base=base, title=f"[[drill.checks]] #{i + 1}")
        if read["expect"] is not None and read["expect_nonzero"]:
            raise UsageError(f"{culprit} [[drill.checks]] #{i + 1}: give expect or expect_nonzero, not both")
        read["name"] = read["name"] or f"check {i + 1}"
        checks.append(read)
    names = [c["name"] for c in checks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{culprit} [[drill.checks]]: names must be unique ({', '.join(twice)} twice)")
    return checks


DRILL_CHECK = Table(
    "[[drill.checks]]",
    (
        Setting("name", "str", help="the check's name in reports (default: check N)"),
        Setting("target", "str", required=True, help="the target whose drill place the query runs in"),
        Setting("database", "str", help="the set's database to run in (renamed as restored)"),
        Setting("sql", "text", required=True, help="the query; its first row's first column is its answer"),
        Setting("expect", "str", help="the answer it must give, as text (NULL for none)"),
        Setting("expect_nonzero", "bool", False, "the answer must be a number other than 0"),
    ),
)  # fmt: skip
DRILL = Table(
    "[drill]",
    (
        Setting(
            "targets", "custom", read=lambda conf, key, culprit, base: conf.get(key, {}),
            help="[drill.targets.NAME]: where target NAME is restored (keys of [restore.NAME])",
        ),
        Setting(
            "checks", "custom", read=lambda conf, key, culprit, base: _read_checks(conf, culprit, base),
            help="[[drill.checks]]: SQL queries with the answer expected",
        ),
        Setting(
            "command", "custom", read=lambda conf, key, culprit, base: _read_command(conf, culprit),
            help="a program run after the restore (argv list, no shell); its exit code decides",
        ),
        Setting("audit", "bool", True, "audit the drill places at ScalarDB's level (false: not ScalarDB's)"),
        Setting(
            "timeout", "duration", "10m", "each check and the command must finish within this",
            minimum=1.0, maximum=86400.0,
        ),
    ),
)  # fmt: skip
def _pushgateway(conf: Mapping[str, Any], key: str, culprit: str, base: Path | None) -> str | None:
    if key not in conf:
        return None
    if not isinstance(conf[key], str):
        raise UsageError(f"{culprit}: {key} must be a URL string")
    return check_pushgateway(conf[key], what=f"{culprit}: {key}")


def _job(conf: Mapping[str, Any], key: str, culprit: str, base: Path | None) -> str:
    value = conf.get(key, "txbackup")
    if not isinstance(value, str):
        raise UsageError(f"{culprit}: {key} must be a string")
    return check_job(value, what=f"{culprit}: {key}")


METRICS = Table(
    "[metrics]",
    (
        Setting("textfile", "path", help="write the run's metrics here for node-exporter (NAME.prom)"),
        Setting("pushgateway", "custom", read=_pushgateway, help="push them to this Pushgateway (URL)"),
        Setting("job", "custom", read=_job, help='the Pushgateway job name (default "txbackup")'),
        Setting(
            "timeout", "duration", "10s", "the deadline of the push", minimum=0.001, maximum=300.0,
        ),
    ),
)  # fmt: skip
TABLES = (
    "applications", "storage", "catalog", "backup", "targets", "restore", "scalardb", "drill", "metrics",
)  # fmt: skip
"""The top level of the file: only these tables, each read on its own."""

RESTORE_LOCATION = ("dsn", "host", "port", "user", "database", "path", "dir")
"""The settings of a ``[restore.NAME]`` section that say where (``--to`` replaces them)."""


def parse_applications(
    conf: Mapping[str, Any], where: str = "", base: Path | None = None
) -> Applications:
    """The ``[applications]`` table (``where`` names the file in messages)."""
    read = APPLICATIONS.read(conf, where=where, base=base)
    max_wait = read["max_pause_wait"]
    return Applications(
        endpoints=read["endpoints"],
        srv=read["srv"],
        dns_server=read["dns_server"],
        options=ClientOptions(timeout=read["timeout"], tls=read["tls"]),
        wait_outstanding=read["wait_outstanding"],
        max_pause_wait_ms=None if max_wait is None else round(max_wait * 1000),
        kubernetes=read["kubernetes"],
    )


def build_target(conf: object, index: int, base: Path | None = None, where: str = "") -> Target:
    """The target of one ``[[targets]]`` table; its relative paths are made relative to
    ``base`` (the cluster file's folder; the working directory when None)."""
    culprit = f"{where} [[targets]] #{index + 1}".strip()
    if not isinstance(conf, Mapping):
        raise UsageError(f"{culprit} must be a table")
    name = conf.get("name")
    if name is None:
        raise UsageError(f"{culprit}: a target needs a name")
    check_name(name, what="target name", culprit=culprit)
    kind = conf.get("kind")
    if kind not in TARGET_KINDS:
        known = ", ".join(sorted(TARGET_KINDS))
        near = nearest(kind, TARGET_KINDS) if isinstance(kind, str) else None
        hint = f'did you mean "{near}"? ' if near else ""
        shown = repr(kind)[:40]
        prefix = f"{where}: " if where else ""
        raise UsageError(f'{prefix}target "{name}": unknown kind {shown} ({hint}known: {known})')
    # the kind's extra is named like the kind (pip install 'txbackup[postgres]'); sqlite needs none
    prefix = f"{where}: " if where else ""
    module = import_extra(TARGET_KINDS[kind], kind, f'{prefix}target "{name}" ({kind})')
    try:
        target: Target = module.from_config(name, resolve_paths(conf, base))
    except UsageError as exc:
        if not where:
            raise
        raise UsageError(f"{where}: {exc}") from None
    return target


def _optional_name(conf: Mapping[str, Any], key: str, default: str, culprit: str) -> str:
    return setting_optional_name(conf, key, default, culprit=culprit)


def apply_scalardb(raw_targets: list[Any], scalardb: Mapping[str, Any], where: str) -> list[Any]:
    """The ``[[targets]]`` tables with ScalarDB's namespaces placed as ``[scalardb]`` says.

    The rule (checked when the file is loaded, so before anything is paused): a set that backs
    up ScalarDB tables (the file has a ``[scalardb]`` table; ``txbackup init --scalardb-config``
    writes one) must hold the coordinator namespace in ``coordinator_target`` and the system
    namespace in every target, since each storage keeps the metadata of its own tables there
    (``DistributedStorageAdmin`` per storage in scalardb's ``MultiStorageAdmin``). Without
    either a restored set is unreadable by ScalarDB. Targets that do not hold the coordinator
    get it switched off (``""``) unless they name it themselves, so no target demands it where
    the configuration places it in another storage."""
    culprit = f"{where} [scalardb]".strip()
    coordinator, system = scalardb["coordinator_namespace"], scalardb["system_namespace"]
    holder = scalardb["coordinator_target"]
    named = [t.get("name") for t in raw_targets if isinstance(t, Mapping)]
    if coordinator and holder is None:
        raise UsageError(
            f"{culprit}: the coordinator namespace {coordinator!r} is in no target of the set: set "
            "coordinator_target to the target whose storage holds it"
        )
    if coordinator and holder not in named:
        names = [n for n in named if isinstance(n, str)]
        near = nearest(holder, names)
        hint = f' (did you mean "{near}"?)' if near else f" (targets: {', '.join(names)})"
        raise UsageError(
            f"{culprit}: coordinator_target {holder!r} is not a target, so the coordinator namespace "
            f"{coordinator!r} is in none{hint}"
        )
    placed = []
    for conf in raw_targets:
        if not isinstance(conf, Mapping) or conf.get("kind") not in SCALARDB_KEYS:
            placed.append(conf)  # build_target names what is wrong with it
            continue
        out = dict(conf)
        label = f"{where}: target {shown_text(str(conf.get('name')))}".lstrip(": ")
        coordinator_key, system_key = SCALARDB_KEYS[str(conf["kind"])]
        here = bool(coordinator) and conf.get("name") == holder
        wanted = f"{coordinator}.state" if conf["kind"] == "dynamodb" else coordinator
        if coordinator_key and here:
            given = out.setdefault(coordinator_key, wanted)
            fits = given == wanted or (conf["kind"] == "dynamodb" and str(given).endswith(wanted))
            if not fits:  # a DynamoDB namespace prefix comes before the coordinator's name
                raise UsageError(
                    f"{label}: {coordinator_key} = {shown_text(str(given))}, but [scalardb] places the "
                    f"coordinator namespace {coordinator!r} here"
                )
        elif coordinator_key:
            out.setdefault(coordinator_key, "")
        if system_key:
            if out.setdefault(system_key, system) == "":
                raise UsageError(
                    f'{label}: {system_key} = "" leaves out ScalarDB\'s system namespace; every storage '
                    "keeps its tables' metadata there, and ScalarDB cannot read a restore without it "
                    '("CORE-10016: The table does not exist")'
                )
        elif conf["kind"] == "dynamodb":
            tables = conf.get("tables")
            # ScalarDB names it <namespace prefix><system namespace>.metadata
            if isinstance(tables, list) and not any(
                isinstance(t, str) and t.endswith(f"{system}.metadata") for t in tables
            ):
                raise UsageError(
                    f"{label}: tables leave out ScalarDB's system table {system}.metadata (with any "
                    "namespace prefix): ScalarDB cannot read a restore without it"
                )
        placed.append(out)
    return placed


def _read_rename(conf: Mapping[str, Any], culprit: str) -> dict[str, str]:
    """``rename = { old = "new" }``: a table of strings (the target checks the names)."""
    value = conf.get("rename", {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        raise UsageError(f'{culprit}: rename must be a table of database names, e.g. {{ old = "new" }}')
    return dict(value)


def _restore_sections(
    value: object, names: list[str], where: str, base: Path, table: str = "restore"
) -> dict[str, dict[str, Any]]:
    """``[restore.NAME]`` sections (or, with ``table``, ``[drill.targets.NAME]``: the one
    reader of a restore destination)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{where} [{table}] must hold [{table}.NAME] tables")
    sections: dict[str, dict[str, Any]] = {}
    for name, conf in value.items():
        culprit = f"{where} [{table}.{name}]"
        check_name(name, what="target name", culprit=f"{where} [{table}]")
        if name not in names:
            near = nearest(name, names)
            hint = f' (did you mean "{near}"?)' if near else f" (targets: {', '.join(names)})"
            raise UsageError(f"{culprit}: no target is named {name!r}{hint}")
        read = RESTORE.read(conf, where=where, base=base, title=f"[{table}.{name}]")
        if read["dsn"] is not None:
            check_dsn(read["dsn"], culprit=culprit)
        if read["path"] and read["dir"]:
            raise UsageError(f"{culprit}: give either path or dir, not both")
        # a destination is a mapping of strings (the targets parse the port)
        sections[name] = {k: str(v) for k in RESTORE_LOCATION if (v := read[k]) is not None} | {
            "password": read["password"]
        } | ({"rename": read["rename"]} if read["rename"] else {})
    return sections


def parse_storage_options(pairs: list[str], flag: str = "--storage-option") -> dict[str, Any]:
    """``KEY=VALUE`` flags as ``[storage]`` options, typed and checked by the same
    declarations as the cluster file (``true``/``false`` for a bool)."""
    conf: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or key not in STORAGE_OPTIONS:
            known = ", ".join(STORAGE_OPTIONS)
            raise UsageError(f"{flag} {shown_text(key)}: expected KEY=VALUE with KEY one of {known}")
        setting = next(s for s in STORAGE.settings if s.key == key)
        if setting.type == "bool":
            if value not in ("true", "false"):
                raise UsageError(f"{flag} {key}: true or false, not {shown_text(value)}")
            conf[key] = value == "true"
        elif setting.type == "int":
            if not value.isdigit() or len(value) > 18:
                raise UsageError(f"{flag} {key}: a whole number, not {shown_text(value)}")
            conf[key] = int(value)
        else:
            conf[key] = value
    _refuse_secrets(conf, flag)
    return _options(STORAGE.read(conf, where=flag, title=""))


def _options(read: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k in STORAGE_OPTIONS if (v := read.get(k)) is not None}


def state_home() -> Path:
    """``$XDG_STATE_HOME`` (an absolute path), else ``~/.local/state``."""
    given = os.environ.get("XDG_STATE_HOME", "")
    return Path(given) if os.path.isabs(given) else Path.home() / ".local" / "state"


def default_catalog(storage: Storage) -> str:
    """Where the catalog is unless configured: ``<storage>/catalog.db`` for a local
    storage (as always); for a remote one a local file of its own, under
    ``$XDG_STATE_HOME/txbackup/<hash of the storage's URL>/catalog.db`` (the
    catalog is an index, rebuilt from the repository with ``list --rebuild``;
    it never goes into the bucket). The URL's hash, not the repository id: the
    place is known before the repository is read, even before ``init``."""
    inner = storage.inner if isinstance(storage, RetryStorage) else storage
    if isinstance(inner, LocalStorage):
        return os.path.join(inner.root, "catalog.db")
    key = hashlib.sha256(storage.describe().encode()).hexdigest()[:24]
    return str(state_home() / "txbackup" / key / "catalog.db")


def check_places(
    storage: str,
    catalog: str | None,
    *,
    where: str = "",
    writable: bool = False,
    options: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """(storage, catalog) checked before use: a storage scheme we know, a local storage
    that is a folder if it exists (and that we may write in, when ``writable``: a backup
    checks it before anything is paused), a catalog that is not a folder; the catalog
    defaults to ``default_catalog``. When ``writable``, a backend with a ``check()``
    (object stores: bucket, credentials, conditional writes) is checked too."""
    prefix = f"{where}: " if where else ""
    # a scheme we do not know (or a bad option) is refused now, not at the first write
    store = open_storage(storage, options)
    if isinstance(store, RetryStorage):
        store = store.inner
    if isinstance(store, LocalStorage):
        _check_folder(store.root, f"{prefix}storage {store.root}", writable=writable)
    check = getattr(store, "check", None)
    if writable and callable(check):
        check()
    if catalog is None:
        catalog = default_catalog(store)
    if not catalog:
        raise UsageError(f"{prefix}catalog: empty path")
    if os.path.isdir(catalog):
        raise UsageError(f"{prefix}catalog {catalog}: is a folder, not a file")
    _check_folder(os.path.dirname(os.path.abspath(catalog)), f"{prefix}catalog {catalog}", writable=writable)
    return storage, catalog


def _check_folder(path: str, what: str, *, writable: bool = False) -> None:
    """``path`` is a folder, or can become one: its nearest existing ancestor is a folder
    (one we may write in, when ``writable``)."""
    here = os.path.abspath(path)
    while not os.path.exists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        raise UsageError(f"{what}: {here} is not a folder")
    if writable and not os.access(here, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: {here} is not writable")


def _read_file(file: Path) -> dict[str, Any]:
    """The TOML of ``file``; every failure (missing, a folder, too large, binary, bad TOML)
    is one line naming the file."""
    where = f"cluster file {file}"
    data = read_small_file(file, where, MAX_FILE_BYTES, "cluster file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply") from None


def _refuse_secrets(value: object, where: str, key: str = "") -> None:
    """Refuse a credential written inside any value of the file (a URL's ``user:password@``,
    a ``password=`` in a connection string or a command), naming the key, never the value."""
    if isinstance(value, str):
        found = None if key.endswith("_pem") else dsn_secret(value)
        if found is not None:
            raise UsageError(
                f"{where}: {key} holds {found}; secrets never go in the cluster file: "
                'use password_env = "VARIABLE" or password_file = "FILE" instead'
            )
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _refuse_secrets(v, where, f"{key}.{k}".lstrip("."))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_secrets(v, where, f"{key}[{i}]")


def load_cluster(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster file; relative paths are relative to it."""
    file = Path(path)
    data = _read_file(file)
    where = f"cluster file {file}"
    _refuse_secrets(data, where)
    base = file.absolute().parent
    check_keys(data, TABLES, culprit=where, common=())
    for key in ("applications", "storage", "catalog", "backup"):
        if key in data and not isinstance(data[key], Mapping):
            raise UsageError(f"{where}: [{key}] must be a table")
    apps = parse_applications(data.get("applications", {}), where, base)
    raw_targets = data.get("targets", [])
    if not isinstance(raw_targets, list) or not raw_targets:
        raise UsageError(f"{where}: no [[targets]]")
    scalardb = None
    if "scalardb" in data:
        scalardb = SCALARDB.read(data["scalardb"], where=where, base=base)
        raw_targets = apply_scalardb(raw_targets, scalardb, where)
    targets = [build_target(t, i, base, where) for i, t in enumerate(raw_targets)]
    names = [t.name for t in targets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{where}: target names must be unique ({', '.join(twice)} twice)")
    storage_read = STORAGE.read(data.get("storage", {}), where=where, base=base)
    storage, options = storage_read["path"], _options(storage_read)
    catalog = CATALOG.read(data.get("catalog", {}), where=where, base=base)["path"]
    backup = BACKUP.read(data.get("backup", {}), where=where, base=base)
    storage, catalog = check_places(storage, catalog, where=where, options=options)
    return ClusterConfig(
        path=file,
        applications=apps,
        targets=targets,
        storage=storage,
        catalog=catalog,
        storage_options=options,
        capture_deadline_s=backup["capture_deadline"],
        min_pause_s=backup["min_pause"],
        scalardb=scalardb,
        restore=_restore_sections(data.get("restore"), names, where, base),
        drill=_drill(data.get("drill"), names, where, base),
        metrics=_metrics(data.get("metrics"), where, base),
    )


def _metrics(value: object, where: str, base: Path) -> MetricsConfig:
    if value is None:
        return MetricsConfig()
    read = METRICS.read(value, where=where, base=base)
    if read["textfile"] is not None:
        check_textfile(read["textfile"], what=f"{where} [metrics] textfile")
    return MetricsConfig(
        textfile=read["textfile"], pushgateway=read["pushgateway"], job=read["job"], timeout_s=read["timeout"]
    )


def _drill(value: object, names: list[str], where: str, base: Path) -> dict[str, Any] | None:
    if value is None:
        return None
    read = DRILL.read(value, where=where, base=base)
    read["targets"] = _restore_sections(read["targets"], names, where, base, table="drill.targets")
    for check in read["checks"]:
        if check["target"] not in names:
            raise UsageError(f"{where} [[drill.checks]] {check['name']}: no target named {check['target']!r}")
    return read
