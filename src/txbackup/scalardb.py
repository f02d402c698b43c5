"""What a ScalarDB configuration (``database.properties``) says about where its data lives,
and the cluster file that backs it up (``txbackup init --scalardb-config``).

Property names, read from scalar-labs/scalardb (core/src/main/java/com/scalar/db/):

- ``config/DatabaseConfig.java``: ``scalar.db.storage`` (default ``cassandra``),
  ``scalar.db.contact_points`` (a comma-separated list; ``\\,`` escapes a comma, see
  ``ConfigUtils.getStringArray``), ``scalar.db.contact_port``, ``scalar.db.username``,
  ``scalar.db.password``, ``scalar.db.transaction_manager`` (default ``consensus-commit``),
  ``scalar.db.system_namespace_name`` (default ``scalardb``). Values are trimmed and
  ``${env:NAME}`` is replaced by the environment variable (``ConfigUtils.trimAndReplace``).
- ``storage/multistorage/MultiStorageConfig.java``: ``scalar.db.multi_storage.storages``
  (names), each storage's own properties as
  ``scalar.db.multi_storage.storages.<name>.<property without scalar.db.>`` on top of the
  global non-multi-storage ones, ``scalar.db.multi_storage.namespace_mapping``
  (``namespace:storage,...``), ``scalar.db.multi_storage.default_storage``.
  ``MultiStorageAdmin`` routes a namespace to its mapped storage, else to the default one.
- ``transaction/consensuscommit/ConsensusCommitConfig.java``:
  ``scalar.db.consensus_commit.coordinator.namespace`` (default ``coordinator``, table
  ``state``) and ``scalar.db.consensus_commit.coordinator.group_commit.enabled``.
- ``storage/jdbc/JdbcConfig.java``: the JDBC URL is the contact point; the system namespace
  is ``scalar.db.jdbc.table_metadata.schema`` when given (deprecated), else the system
  namespace name. A ScalarDB namespace is a *schema* on PostgreSQL and a *database* on
  MySQL/MariaDB.
- ``storage/dynamo/DynamoConfig.java``: region = first contact point, access key id =
  username, secret = password, ``scalar.db.dynamo.endpoint_override``,
  ``scalar.db.dynamo.namespace.prefix``, ``scalar.db.dynamo.table_metadata.namespace``
  (deprecated); tables are named ``<prefix><namespace>.<table>`` (``DynamoAdmin``).
- ``storage/cosmos/CosmosConfig.java``: endpoint = first contact point, key = password,
  ``scalar.db.cosmos.table_metadata.database`` (deprecated).
- ``storage/cassandra/CassandraConfig.java``: the system keyspace is the system namespace.
- server/.../ServerConfig.java (3.13): ``scalar.db.server.port`` (default 60051), where
  ScalarDB Server also answers scalar-admin.

Every storage keeps its own system namespace (each storage's admin writes the metadata of
its own tables there), while the coordinator lives in one storage: the one its namespace is
mapped to, else the default storage. The properties do not say which namespaces the
application uses (only the mapping names some): the cluster file lists what is known and
leaves commented placeholders for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from txbackup.errors import UsageError
from txbackup.javaprops import Properties

PREFIX = "scalar.db."
MULTI = "multi-storage"
STORAGES = "scalar.db.multi_storage.storages"
NAMESPACE_MAPPING = "scalar.db.multi_storage.namespace_mapping"
DEFAULT_STORAGE = "scalar.db.multi_storage.default_storage"
COORDINATOR_NAMESPACE = "scalar.db.consensus_commit.coordinator.namespace"
GROUP_COMMIT = "scalar.db.consensus_commit.coordinator.group_commit.enabled"
SYSTEM_NAMESPACE = "scalar.db.system_namespace_name"
DEFAULT_SYSTEM = "scalardb"
DEFAULT_COORDINATOR = "coordinator"
SERVER_PORT = "scalar.db.server.port"
DEFAULT_SERVER_PORT = 60051
AGENT_PORT = 7480
"""The port the README's Cassandra examples run ``txbackup agent`` on."""

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_SUBSTITUTION = re.compile(r"\$\{[^}]*\}")
_JDBC = re.compile(r"jdbc:([a-z0-9]+):(.*)", re.DOTALL)
_HOSTPORT = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+))(?::([0-9]{1,5}))?")


_DEPRECATED_SYSTEM = {
    "jdbc": "jdbc.table_metadata.schema",
    "dynamo": "dynamo.table_metadata.namespace",
    "cosmos": "cosmos.table_metadata.database",
}


@dataclass
class Storage:
    """One storage of the configuration (the only one without multi-storage)."""

    name: str
    """Its multi-storage name ("" for a single storage)."""
    props: dict[str, str]
    """Its ``scalar.db.*`` properties (multi-storage prefixes folded away)."""

    @property
    def kind(self) -> str:
        return self.props.get(PREFIX + "storage", "cassandra")

    @property
    def system_namespace(self) -> str:
        # each kind's deprecated property wins when given (JdbcConfig, DynamoConfig, CosmosConfig)
        deprecated = _DEPRECATED_SYSTEM.get(self.kind)
        if deprecated and PREFIX + deprecated in self.props:
            return self.props[PREFIX + deprecated] or DEFAULT_SYSTEM
        return self.props.get(SYSTEM_NAMESPACE) or DEFAULT_SYSTEM


@dataclass
class ScalarDbConfig:
    storages: list[Storage]
    namespace_mapping: dict[str, str]
    default_storage: str
    transaction_manager: str
    coordinator_namespace: str
    """"" when the transaction manager is not Consensus Commit (no coordinator)."""
    group_commit: bool
    server_port: int | None
    warnings: list[str] = field(default_factory=list)

    def storage_of(self, namespace: str) -> str:
        """The storage holding ``namespace`` (MultiStorageAdmin's routing)."""
        return self.namespace_mapping.get(namespace, self.default_storage)

    def mapped(self, storage: str) -> list[str]:
        return [ns for ns, st in self.namespace_mapping.items() if st == storage]


def _value(raw: str) -> str:
    """A property value as ScalarDB reads it (trimmed; ``${...}`` left in place)."""
    return raw.strip()


def string_array(value: str) -> list[str]:
    """``ConfigUtils.getStringArray``: split on commas not preceded by a backslash, blanks
    around them dropped, then every backslash removed."""
    if not value.strip():
        return []
    return [part.replace("\\", "") for part in re.split(r"\s*(?<!\\),\s*", value.strip())]


def read_config(props: Properties, *, where: str = "properties") -> ScalarDbConfig:
    """The ScalarDB configuration in ``props`` (single storage or multi-storage)."""
    values = {k: _value(v) for k, v in props.values.items()}
    warnings = [f"{where}: {k} is given twice; the last value counts (as in Java)" for k in props.repeated]
    manager = values.get(PREFIX + "transaction_manager", "consensus-commit")
    if manager in ("grpc", "cluster"):
        raise UsageError(
            f"{where}: scalar.db.transaction_manager={manager} is a client's configuration; give the "
            "database.properties of the ScalarDB server (or cluster node), which names the storages"
        )
    kind = values.get(PREFIX + "storage", "cassandra")
    mapping: dict[str, str] = {}
    if kind == MULTI:
        names = string_array(values.get(STORAGES, ""))
        if not names:
            raise UsageError(f"{where}: scalar.db.storage=multi-storage without {STORAGES}")
        if len(set(names)) != len(names) or "" in names:
            raise UsageError(f"{where}: {STORAGES} names a storage twice, or an empty one")
        storages = []
        for name in names:
            own = f"{STORAGES}.{name}."
            folded = {k: v for k, v in values.items() if not k.startswith("scalar.db.multi_storage.")}
            folded |= {PREFIX + k[len(own) :]: v for k, v in values.items() if k.startswith(own)}
            if folded.get(PREFIX + "storage", "cassandra") == MULTI:
                raise UsageError(f"{where}: storage {name!r} is multi-storage again (ScalarDB refuses it)")
            storages.append(Storage(name, folded))
        for entry in string_array(values.get(NAMESPACE_MAPPING, "")):
            namespace, colon, storage = entry.partition(":")
            if not colon or not namespace or storage not in names:
                raise UsageError(
                    f"{where}: {NAMESPACE_MAPPING}: {entry[:80]!r} is not namespace:storage with a storage "
                    f"of {STORAGES}"
                )
            mapping[namespace] = storage
        if values.get("scalar.db.multi_storage.table_mapping"):
            warnings.append(
                f"{where}: scalar.db.multi_storage.table_mapping (deprecated) is not read: tables it maps "
                "to another storage than their namespace's are not placed; check the targets by hand"
            )
        default = values.get(DEFAULT_STORAGE, "")
        if default not in names:
            raise UsageError(f"{where}: {DEFAULT_STORAGE} must name one of {STORAGES}")
    else:
        storages = [Storage("", {k: v for k, v in values.items() if k.startswith(PREFIX)})]
        default = ""
    consensus = manager == "consensus-commit"
    if not consensus:
        warnings.append(
            f"{where}: transaction manager {manager!r} keeps no coordinator: only the system namespace "
            "is added to the targets"
        )
    group = values.get(GROUP_COMMIT, "false").lower()
    port_text = values.get(SERVER_PORT)
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"{where}: {SERVER_PORT} is not a port number")
        port = int(port_text)
    return ScalarDbConfig(
        storages=storages,
        namespace_mapping=mapping,
        default_storage=default,
        transaction_manager=manager,
        coordinator_namespace=(values.get(COORDINATOR_NAMESPACE) or DEFAULT_COORDINATOR) if consensus else "",
        group_commit=group == "true",
        server_port=port,
        warnings=warnings,
    )


# -- JDBC URLs -------------------------------------------------------------------------------------
@dataclass
class JdbcUrl:
    engine: str
    host: str
    port: int
    database: str
    """"" when the URL names none."""
    secret: bool
    """The URL carries a password (never copied)."""
    hosts: int = 1


def parse_jdbc(url: str, *, culprit: str) -> JdbcUrl:
    """``jdbc:postgresql://host:port/db?...``, ``jdbc:mysql://...``, ``jdbc:mariadb://...``
    (and pgjdbc's ``jdbc:postgresql:db``)."""
    match = _JDBC.fullmatch(url.strip())
    if not match:
        raise UsageError(f"{culprit}: {url[:80]!r} is not a JDBC URL")
    engine, rest = match.groups()
    default_port = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}.get(engine)
    if default_port is None:
        raise UsageError(f"{culprit}: JDBC engine {engine!r}: txbackup backs up postgresql, mysql, mariadb")
    rest, _, query = rest.partition("?")
    secret = any(p.partition("=")[0].lower() == "password" for p in query.split("&"))
    if not rest.startswith("//"):
        if engine != "postgresql":
            raise UsageError(f"{culprit}: {url[:80]!r}: expected jdbc:{engine}://host:port/")
        return JdbcUrl(engine, "127.0.0.1", default_port, rest.lstrip("/"), secret)
    authority, _, path = rest[2:].partition("/")
    if "@" in authority:  # Connector/J allows user:password@host
        userinfo, _, authority = authority.rpartition("@")
        secret = secret or ":" in userinfo
    hosts = [h for h in authority.split(",") if h]
    first = hosts[0] if hosts else "127.0.0.1"
    found = _HOSTPORT.fullmatch(first)
    if not found:
        raise UsageError(f"{culprit}: {url[:80]!r}: cannot read the host")
    host = found.group(1) or found.group(2)
    port = int(found.group(3)) if found.group(3) else default_port
    if not 0 < port < 65536:
        raise UsageError(f"{culprit}: {url[:80]!r}: port {port} is out of range")
    return JdbcUrl(engine, host, port, path.strip("/"), secret, max(len(hosts), 1))


# -- TOML ------------------------------------------------------------------------------------------
def toml_str(value: str) -> str:
    """``value`` as a TOML basic string: every quote, backslash and control character escaped,
    so nothing a value holds (a newline, a ``"``) can end the string or the line."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or char in "\u2028\u2029":
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(toml_str(v) for v in values) + "]"


def target_name(storage: Storage, taken: set[str]) -> str:
    """A target name for a storage: its multi-storage name made a valid name (else its kind)."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", storage.name)[:100].strip(".") or _KIND_NAMES.get(
        storage.kind, "scalardb"
    )
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def env_name(target: str, what: str) -> str:
    """A placeholder environment variable name for a target's secret."""
    return re.sub(r"[^A-Z0-9_]", "_", f"TXBACKUP_{target.upper()}_{what}")


_KIND_NAMES = {"jdbc": "jdbc", "cassandra": "cassandra", "dynamo": "dynamodb", "cosmos": "cosmos"}


@dataclass
class Planned:
    """One target written (for the summary)."""

    name: str
    kind: str
    storage: str
    namespaces: list[str]
    coordinator: bool
    system_namespace: str
    placeholders: list[str] = field(default_factory=list)


@dataclass
class ClusterFile:
    text: str
    targets: list[Planned]
    coordinator_target: str | None
    warnings: list[str]


def _secret(storage: Storage, key: str, target: str, what: str, lines: list[str],
            warnings: list[str], planned: Planned) -> None:  # fmt: skip
    """A ``<what>_env`` line for the storage's secret property ``key``: the variable named
    in a ``${env:NAME}`` value, else a placeholder; the value itself is never written."""
    value = storage.props.get(key)
    if value is None:
        return
    found = _ENV_REF.fullmatch(value)
    if found:
        lines.append(f"{what}_env = {toml_str(found.group(1))}   # as {key} reads it")
        return
    var = env_name(target, what.upper())
    lines.append(f"{what}_env = {toml_str(var)}   # export it: {key} is not copied here")
    planned.placeholders.append(var)
    if not _SUBSTITUTION.search(value):
        warnings.append(f'target "{target}": the properties hold a secret ({key}); not copied: export {var}')


def build_cluster_file(config: ScalarDbConfig, *, source: str) -> ClusterFile:
    """The commented cluster file (TOML text) for ``config``; ``source`` names the properties
    file in the header. Every value goes through :func:`toml_str`; comments hold no value
    from the file except through it."""
    warnings = list(config.warnings)
    taken: set[str] = set()
    coordinator = config.coordinator_namespace
    coordinator_storage = config.storage_of(coordinator) if coordinator else None
    planned: list[Planned] = []
    blocks: list[str] = []
    for storage in config.storages:
        name = target_name(storage, taken)
        holds_coordinator = bool(coordinator) and storage.name == (coordinator_storage or "")
        mapped = config.mapped(storage.name)
        is_default = storage.name == config.default_storage
        plan = Planned(name, "", storage.name, list(mapped), holds_coordinator, storage.system_namespace)
        lines = _target_lines(config, storage, plan, is_default, warnings)
        if lines is None:
            taken.discard(name)
            continue
        planned.append(plan)
        blocks.append("\n".join(lines))
    holder = next((p.name for p in planned if p.coordinator), None)
    header = [
        f"# Written by txbackup init --scalardb-config {toml_str(source)}.",
        "# Check every target, fill in the placeholders (TODO), then run: txbackup backup -c <this file>",
        "",
        "[applications]",
        "# the scalar-admin endpoints to pause: every ScalarDB server (each one answers scalar-admin",
        f"# on its gRPC port, scalar.db.server.port, default {DEFAULT_SERVER_PORT}) or ScalarDB Cluster node",
    ]
    port = config.server_port or DEFAULT_SERVER_PORT
    header.append(f'# endpoints = ["scalardb-1.internal:{port}", "scalardb-2.internal:{port}"]')
    header += [
        "",
        "[storage]",
        'path = "backups"   # or s3://bucket/prefix, az://container/prefix, gs://bucket/prefix',
        "",
        "[scalardb]",
        "# where ScalarDB keeps what every restore needs: the coordinator (transaction states) in one",
        "# storage, the system namespace (table metadata) in each; a backup refuses a set without them",
        f"coordinator_namespace = {toml_str(coordinator)}",
    ]
    if holder:
        header.append(f"coordinator_target = {toml_str(holder)}")
    elif coordinator:
        where = toml_str(coordinator_storage or "")
        header.append(f"# coordinator_target = TODO: storage {where} holds the coordinator and has no target")
        warnings.append(
            f"the coordinator namespace {coordinator!r} lives in storage {coordinator_storage!r}, which has "
            "no target: the cluster file will be refused until one holds it"
        )
    system = next((s.system_namespace for s in config.storages), DEFAULT_SYSTEM)
    header.append(f"system_namespace = {toml_str(system)}")
    header.append(f"group_commit = {'true' if config.group_commit else 'false'}")
    text = "\n".join(header) + "\n\n" + "\n\n".join(blocks) + "\n"
    return ClusterFile(text, planned, holder, warnings)


def _target_lines(
    config: ScalarDbConfig, storage: Storage, plan: Planned, is_default: bool, warnings: list[str]
) -> list[str] | None:
    kind = storage.kind
    label = f"storage {storage.name!r}" if storage.name else "the storage"
    points = string_array(storage.props.get(PREFIX + "contact_points", ""))
    name, system = plan.name, plan.system_namespace
    coordinator = config.coordinator_namespace
    lines = ["[[targets]]", f"name = {toml_str(name)}"]
    if storage.name:
        lines.insert(0, f"# ScalarDB storage {toml_str(storage.name)} ({toml_str(kind)})")
    head = len(lines)  # the kind goes right after the name
    # the default storage (or the only one) holds every namespace the mapping does not name
    unknown = is_default or not storage.name

    def todo(what: str) -> None:
        warnings.append(
            f'target "{name}": the properties do not say which namespaces {label} holds (only the '
            f"namespace mapping names some): complete its {what}"
        )
    if kind == "jdbc":
        if not points:
            raise UsageError(f"{label}: scalar.db.contact_points (the JDBC URL) is missing")
        try:
            url = parse_jdbc(points[0], culprit=label)
        except UsageError as exc:
            if "txbackup backs up" not in str(exc):
                raise
            warnings.append(f"{exc}: no target written")
            return None
        if url.hosts > 1:
            warnings.append(f'target "{name}": the JDBC URL lists {url.hosts} hosts; the first one is used')
        lines += [f"host = {toml_str(url.host)}", f"port = {url.port}"]
        user = storage.props.get(PREFIX + "username")
        if user and not _SUBSTITUTION.search(user):
            lines.append(f"user = {toml_str(user)}")
        _secret(storage, PREFIX + "password", name, "password", lines, warnings, plan)
        if url.secret:
            warnings.append(f'target "{name}": the JDBC URL holds a password; not copied')
        if url.engine == "postgresql":
            plan.kind = "postgres"
            database = url.database or user or "postgres"
            lines[head:head] = ['kind = "postgres"']
            lines.append(f"databases = {toml_list([database])}   # ScalarDB namespaces are its schemas")
            if unknown:
                lines.append("# no include: the whole database, every namespace (schema) in it")
                if plan.namespaces:
                    lines.append(f"# include = {toml_list(plan.namespaces)}   # + TODO the other namespaces")
            else:
                lines.append(f"include = {toml_list(plan.namespaces)}   # the namespaces mapped to it")
            lines.append(_coordinator_line("coordinator_namespace", coordinator, plan))
            lines.append(f"system_namespace = {toml_str(system)}")
        else:
            plan.kind = "mysql"
            lines[head:head] = ['kind = "mysql"']
            if unknown:
                todo("databases")
            if plan.namespaces:
                more = "   # + TODO the other namespaces" if unknown else "   # the namespaces mapped to it"
                lines.append(f"databases = {toml_list(plan.namespaces)}{more}")
            else:
                lines.append('# databases = ["TODO"]   # required: the ScalarDB namespaces it holds')
            lines.append(_coordinator_line("coordinator_database", coordinator, plan))
            lines.append(f"system_database = {toml_str(system)}")
    elif kind == "cassandra":
        plan.kind = "cassandra"
        lines[head:head] = ['kind = "cassandra"']
        hosts = points or ["127.0.0.1"]
        agents = [f"[{h}]:{AGENT_PORT}" if ":" in h else f"{h}:{AGENT_PORT}" for h in hosts]
        lines.append(f"agents = {toml_list(agents)}   # TODO one txbackup agent per node, every node")
        if unknown:
            todo("keyspaces")
        if plan.namespaces:
            more = "   # + TODO the other namespaces" if unknown else "   # the namespaces mapped to it"
            lines.append(f"keyspaces = {toml_list(plan.namespaces)}{more}")
        else:
            lines.append('# keyspaces = ["TODO"]   # required: the ScalarDB namespaces it holds')
        lines.append(_coordinator_line("coordinator_keyspace", coordinator, plan))
        lines.append(f"system_keyspace = {toml_str(system)}")
        lines.append('token_env = "TXBACKUP_AGENT_TOKEN"   # the agents\' token')
        plan.placeholders.append("TXBACKUP_AGENT_TOKEN")
        if storage.props.get(PREFIX + "password"):
            warnings.append(f'target "{name}": the Cassandra password in the properties is not used (agents)')
    elif kind == "dynamo":
        plan.kind = "dynamodb"
        lines[head:head] = ['kind = "dynamodb"']
        lines.append(f"region = {toml_str(points[0])}" if points else "# region = TODO   # required")
        endpoint = storage.props.get(PREFIX + "dynamo.endpoint_override") or storage.props.get(
            PREFIX + "dynamo.endpoint-override"
        )
        if endpoint:
            lines.append(f"endpoint_url = {toml_str(endpoint)}")
        prefix = storage.props.get(PREFIX + "dynamo.namespace.prefix", "")
        tables = [f"{prefix}{system}.metadata"]
        if plan.coordinator:
            tables.insert(0, f"{prefix}{coordinator}.state")
        todo("tables (the properties name no table)")
        example = toml_str(prefix + "NAMESPACE.TABLE")
        lines.append(f"tables = {toml_list(tables)}   # + TODO every application table")
        lines.append(f"# tables are named <prefix><namespace>.<table>, e.g. {example};")
        newer = toml_str(f"{prefix}{system}.namespaces")
        lines.append(f"# newer ScalarDB also keeps {newer}: add it where it exists")
        coordinator_table = f"{prefix}{coordinator}.state" if plan.coordinator else ""
        lines.append(f"coordinator_table = {toml_str(coordinator_table)}")
        if storage.props.get(PREFIX + "username") is not None:
            _secret(storage, PREFIX + "username", name, "access_key_id", lines, warnings, plan)
            _secret(storage, PREFIX + "password", name, "secret_access_key", lines, warnings, plan)
    elif kind == "cosmos":
        plan.kind = "cosmos"
        lines[head:head] = ['kind = "cosmos"']
        endpoint = points[0] if points else ""
        host = re.sub(r"^https?://", "", endpoint).split("/")[0].split(":")[0]
        account = host.split(".")[0] if host.endswith(".documents.azure.com") else ""
        lines += [
            "# subscription_id = TODO   # required: the account's subscription",
            "# resource_group = TODO    # required: the account's resource group",
        ]
        lines.append(f"account = {toml_str(account)}" if account else "# account = TODO   # required")
        if not unknown and plan.namespaces:
            lines.append(f"databases = {toml_list(plan.namespaces)}   # the namespaces mapped to it")
        else:
            lines.append("# no databases: the whole account, every namespace (database) in it")
        lines.append(_coordinator_line("coordinator_database", coordinator, plan))
        lines.append(f"system_database = {toml_str(system)}")
        if storage.props.get(PREFIX + "password"):
            warnings.append(
                f'target "{name}": the Cosmos DB key in the properties is not copied (txbackup uses Azure '
                "credentials: DefaultAzureCredential or tenant_id/client_id/client_secret_env)"
            )
    else:
        warnings.append(f"{label}: storage kind {kind[:40]!r} has no txbackup target: no target written")
        return None
    return lines


def _coordinator_line(key: str, coordinator: str, plan: Planned) -> str:
    if plan.coordinator:
        return f"{key} = {toml_str(coordinator)}   # ScalarDB's coordinator lives here"
    return f'{key} = ""   # the coordinator lives in another storage'


def summary(made: ClusterFile, output: str) -> dict[str, Any]:
    return {
        "output": output,
        "coordinator_target": made.coordinator_target,
        "targets": [
            {
                "name": p.name,
                "kind": p.kind,
                "storage": p.storage,
                "namespaces": p.namespaces,
                "coordinator": p.coordinator,
                "system_namespace": p.system_namespace,
                "placeholders": p.placeholders,
            }
            for p in made.targets
        ],
        "warnings": made.warnings,
    }
