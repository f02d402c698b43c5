"""A local fake of the few Azure Resource Manager calls the Cosmos DB and flexible-server
targets make.

No emulator of Azure's management plane exists, so this serves exactly the
endpoints ``azure-mgmt-cosmosdb`` calls for us, on 127.0.0.1, over HTTPS with a
self-signed certificate made here (the SDK's bearer-token policy refuses plain
HTTP; the client is given the certificate through ``management_ca_file``):

==========================================================  ====================
``.../databaseAccounts/{name}``                             GET PUT PATCH DELETE
``.../databaseAccounts/{name}/sqlDatabases``                GET
``.../sqlDatabases/{db}/containers``                        GET
``.../containers/{c}/retrieveContinuousBackupInformation``  POST (202 + Location)
``.../locations/{loc}/restorableDatabaseAccounts/{id}``     GET
``.../locations/{loc}/operationsStatus/{op}``               GET (Azure-AsyncOperation)
``.../locations/{loc}/operationResults/{op}``               GET (Location)
``.../Microsoft.DBforPostgreSQL/flexibleServers/{name}``    GET PUT
``.../Microsoft.DBforMySQL/flexibleServers/{name}``         GET PUT
==========================================================  ====================

Flexible servers (Azure Database for PostgreSQL / MySQL): a PUT creates only
by point-in-time restore (``createMode = "PointInTimeRestore"``), and like
Azure each service wants its own time field (PostgreSQL ``pointInTimeUTC``,
MySQL ``restorePointInTime``) between the source's ``earliestRestoreDate`` and
now; the new server is Provisioning until its operation ends (looking at the
server moves it on too), then Ready with a host name of its own.

PUT, PATCH and DELETE answer at once with ``Azure-AsyncOperation`` and
``Location`` headers; the operation is ``InProgress`` for ``polls`` polls, then
Succeeded (its effect applied), Failed (with an Azure-style error) or never
ends, as the test scripts it. A restored account comes up here with
Session consistency, so the target has to set Strong (the guide's step).
Every request is recorded (method, path, query, headers, JSON body) so tests
check what we send field by field.

Bearer tokens: ``GOOD_TOKEN`` is accepted, ``EXPIRED_TOKEN`` gets ARM's 401
``ExpiredAuthenticationToken``, anything else ``InvalidAuthenticationToken``.
This is a contract test of our requests against the documented API, not Azure.
"""

from __future__ import annotations

import datetime as dt
import importlib
import ipaddress
import json
import re
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
GOOD_TOKEN = "fake-arm-token"
EXPIRED_TOKEN = "expired-arm-token"
API = "Microsoft.DocumentDB"
POSTGRES_API = "Microsoft.DBforPostgreSQL"
MYSQL_API = "Microsoft.DBforMySQL"
TIME_FIELD = {POSTGRES_API: "pointInTimeUTC", MYSQL_API: "restorePointInTime"}

_ACCOUNT = re.compile(
    rf"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/{API}/databaseAccounts/(?P<name>[^/]+)"
    r"(?P<rest>/.*)?$",
    re.IGNORECASE,
)
_FLEX = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    rf"(?P<provider>{POSTGRES_API}|{MYSQL_API})/flexibleServers/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_LOCATIONS = re.compile(
    rf"^/subscriptions/(?P<sub>[^/]+)/providers/(?:{API}|{POSTGRES_API}|{MYSQL_API})/locations/(?P<loc>[^/]+)/(?P<kind>[A-Za-z]+)/(?P<id>[^/]+)$",
    re.IGNORECASE,
)


def missing_reason() -> str | None:
    try:
        importlib.import_module("azure.identity")
        importlib.import_module("azure.mgmt.cosmosdb")
        importlib.import_module("cryptography")
    except ImportError as exc:
        return f"azure-mgmt-cosmosdb and azure-identity are needed for the Cosmos DB tests ({exc})"
    return None


class StaticToken:
    """A TokenCredential that hands out one fixed token (the tests' credential)."""

    def __init__(self, token: str = GOOD_TOKEN) -> None:
        self.token = token
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        return AccessToken(self.token, int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Outcome:
    """How the next operation of a kind ends: "ok", "fail" (code, message) or "hang"."""

    kind: str = "ok"
    code: str = ""
    message: str = ""


@dataclass
class Operation:
    op_id: str
    location: str
    polls: int
    outcome: Outcome
    apply: Any  # called once on success
    fail: Any  # called once on failure
    result: Any = None
    status: str = "InProgress"


@dataclass
class FakeArm:
    subscription: str = SUBSCRIPTION
    polls: int = 2  # InProgress answers before an operation ends
    requests: list[Recorded] = field(default_factory=list)
    accounts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    databases: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)
    restorable: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    restore_outcomes: list[Outcome] = field(default_factory=list)  # next restore PUTs, in order
    consistency_sticks: bool = True  # False: a PATCH succeeds but the consistency does not change
    latest_lag_s: float = 0.0  # latestRestorableTimestamp = now - lag
    servers: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # flexible servers
    server_ops: dict[tuple[str, str, str], str] = field(default_factory=dict)  # server -> its operation
    server_outcomes: list[Outcome] = field(default_factory=list)  # next server restores, in order

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fake-arm-")
        self.ca_file = str(Path(self._dir.name) / "cert.pem")
        self._key_file = str(Path(self._dir.name) / "key.pem")
        _self_signed(self.ca_file, self._key_file)
        self.url = ""

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> FakeArm:
        fake = self

        class Handler(_Handler):
            arm = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, self._key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, name="fake-arm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._dir.cleanup()

    def __enter__(self) -> FakeArm:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.accounts.clear()
            self.databases.clear()
            self.restorable.clear()
            self.operations.clear()
            self.restore_outcomes.clear()
            self.consistency_sticks = True
            self.latest_lag_s = 0.0
            self.servers.clear()
            self.server_ops.clear()
            self.server_outcomes.clear()
            self.polls = 2

    # -- the world ------------------------------------------------------------------

    def account_id(self, group: str, name: str) -> str:
        group_id = f"/subscriptions/{self.subscription}/resourceGroups/{group}"
        return f"{group_id}/providers/{API}/databaseAccounts/{name}"

    def restorable_id(self, location: str, instance: str) -> str:
        where = f"/subscriptions/{self.subscription}/providers/{API}/locations/{location}"
        return f"{where}/restorableDatabaseAccounts/{instance}"

    def add_account(
        self,
        group: str,
        name: str,
        *,
        location: str = "West Europe",
        backup: str = "Continuous",
        consistency: str = "Strong",
        databases: dict[str, list[str]] | None = None,
        oldest: dt.datetime | None = None,
        kind: str = "GlobalDocumentDB",
    ) -> dict[str, Any]:
        instance = str(uuid.uuid4())
        policy: dict[str, Any] = (
            {"type": "Continuous", "continuousModeProperties": {"tier": "Continuous7Days"}}
            if backup == "Continuous"
            else {
                "type": "Periodic",
                "periodicModeProperties": {
                    "backupIntervalInMinutes": 240,
                    "backupRetentionIntervalInHours": 8,
                    "backupStorageRedundancy": "Geo",
                },
            }
        )
        account = self._account_json(group, name, location, kind, consistency, instance, policy)
        with self._lock:
            self.accounts[(group, name)] = account
            self.databases[(group, name)] = {d: list(c) for d, c in (databases or {}).items()}
            if backup == "Continuous":
                loc = location.replace(" ", "").lower()
                created = now() - dt.timedelta(days=3)
                self.restorable[instance] = {
                    "id": self.restorable_id(loc, instance),
                    "name": instance,
                    "type": f"{API}/locations/restorableDatabaseAccounts",
                    "location": location,
                    "properties": {
                        "accountName": name,
                        "creationTime": iso(created),
                        "oldestRestorableTime": iso(oldest or now() - dt.timedelta(days=1)),
                        "apiType": "Sql",
                        "restorableLocations": [
                            {
                                "locationName": location,
                                "regionalDatabaseAccountInstanceId": str(uuid.uuid4()),
                                "creationTime": iso(created),
                            }
                        ],
                    },
                }
        return account

    def _account_json(
        self,
        group: str,
        name: str,
        location: str,
        kind: str,
        consistency: str,
        instance: str,
        policy: dict[str, Any],
        state: str = "Succeeded",
    ) -> dict[str, Any]:
        endpoint = f"https://{name}.documents.azure.com:443/"
        loc = location.replace(" ", "").lower()
        region = {
            "id": f"{name}-{loc}",
            "locationName": location,
            "documentEndpoint": f"https://{name}-{loc}.documents.azure.com:443/",
            "provisioningState": state,
            "failoverPriority": 0,
            "isZoneRedundant": False,
        }
        return {
            "id": self.account_id(group, name),
            "name": name,
            "type": f"{API}/databaseAccounts",
            "location": location,
            "kind": kind,
            "tags": {},
            "properties": {
                "provisioningState": state,
                "documentEndpoint": endpoint,
                "databaseAccountOfferType": "Standard",
                "consistencyPolicy": {
                    "defaultConsistencyLevel": consistency,
                    "maxIntervalInSeconds": 5,
                    "maxStalenessPrefix": 100,
                },
                "locations": [region],
                "writeLocations": [region],
                "readLocations": [region],
                "instanceId": instance,
                "createMode": "Default",
                "backupPolicy": policy,
            },
        }

    def delete_source(self, instance: str, when: dt.datetime) -> None:
        """The source account was deleted at ``when`` (its restorable account stays)."""
        with self._lock:
            self.restorable[instance]["properties"]["deletionTime"] = iso(when)

    def set_oldest(self, instance: str, when: dt.datetime) -> None:
        with self._lock:
            self.restorable[instance]["properties"]["oldestRestorableTime"] = iso(when)

    def complete_hanging(self) -> None:
        """Let every operation that was set to hang end well at its next poll."""
        with self._lock:
            for op in self.operations.values():
                if op.outcome.kind == "hang":
                    op.outcome = Outcome("ok")
                    op.polls = 0

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        """The recorded requests of ``method`` whose path matches ``pattern`` (a regex)."""
        with self._lock:
            return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # -- operations -------------------------------------------------------------------

    def _operation(
        self, location: str, outcome: Outcome, apply: Any, fail: Any, result: Any = None
    ) -> Operation:
        op = Operation(str(uuid.uuid4()), location, self.polls, outcome, apply, fail, result)
        self.operations[op.op_id] = op
        return op

    def _op_headers(
        self, op: Operation, api_version: str, *, async_op: bool = True, provider: str = API
    ) -> dict[str, str]:
        base = f"{self.url}/subscriptions/{self.subscription}/providers/{provider}/locations/{op.location}"
        headers = {"Location": f"{base}/operationResults/{op.op_id}?api-version={api_version}"}
        if async_op:
            headers["Azure-AsyncOperation"] = f"{base}/operationsStatus/{op.op_id}?api-version={api_version}"
        return headers

    def _advance(self, op: Operation) -> None:
        if op.status != "InProgress" or op.outcome.kind == "hang":
            return
        if op.polls > 0:
            op.polls -= 1
            return
        if op.outcome.kind == "ok":
            op.status = "Succeeded"
            if op.apply is not None:
                op.apply()
        else:
            op.status = "Failed"
            if op.fail is not None:
                op.fail()

    # -- requests -------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        version = query.get("api-version")
        if not version:
            return _error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        match = _ACCOUNT.match(path)
        if match and match["sub"] == self.subscription:
            return self._account_request(
                method, match["rg"], match["name"], match["rest"] or "", body, version
            )
        match = _FLEX.match(path)
        if match and match["sub"] == self.subscription:
            provider = next(p for p in TIME_FIELD if p.lower() == match["provider"].lower())
            return self._server_request(method, provider, match["rg"], match["name"], body, version)
        match = _LOCATIONS.match(path)
        if match and match["sub"] == self.subscription:
            kind, ident = match["kind"].lower(), match["id"]
            if kind == "restorabledatabaseaccounts" and method == "GET":
                found = self.restorable.get(ident)
                if found is None or found["id"].split("/")[6].lower() != match["loc"].lower():
                    return _error(404, "NotFound", f"Restorable database account {ident} not found.")
                return 200, found, {}
            op = self.operations.get(ident)
            if op is None:
                return _error(404, "NotFound", f"Operation {ident} not found.")
            if kind == "operationsstatus" and method == "GET":
                self._advance(op)
                status: dict[str, Any] = {"id": path, "name": op.op_id, "status": op.status}
                if op.status == "Failed":
                    status["error"] = {"code": op.outcome.code, "message": op.outcome.message}
                return 200, status, {}
            if kind == "operationresults" and method == "GET":
                self._advance(op)
                if op.status == "InProgress":
                    return 202, None, self._op_headers(op, version, async_op=False)
                if op.status == "Failed":
                    return _error(400, op.outcome.code, op.outcome.message)
                return (200, op.result, {}) if op.result is not None else (204, None, {})
        return _error(404, "InvalidResourceType", f"The fake ARM does not serve {method} {path}.")

    def _account_request(
        self, method: str, group: str, name: str, rest: str, body: Any, version: str
    ) -> tuple[int, Any, dict[str, str]]:
        key = (group, name)
        account = self.accounts.get(key)
        if rest == "":
            if method == "GET":
                if account is None:
                    return _error(404, "NotFound", f"Database account {name} not found.")
                return 200, account, {}
            if method == "PUT":
                return self._create(group, name, body, version)
            if account is None:
                return _error(404, "NotFound", f"Database account {name} not found.")
            if method == "PATCH":
                return self._update(account, body, version)
            if method == "DELETE":
                account["properties"]["provisioningState"] = "Deleting"
                loc = account["location"].replace(" ", "").lower()

                def gone() -> None:
                    self.accounts.pop(key, None)
                    self.databases.pop(key, None)

                op = self._operation(loc, Outcome("ok"), gone, None)
                return 202, None, self._op_headers(op, version)
        if account is None:
            return _error(404, "NotFound", f"Database account {name} not found.")
        dbs = self.databases.get(key, {})
        parts = [p for p in rest.split("/") if p]
        if method == "GET" and parts == ["sqlDatabases"]:
            return 200, {"value": [self._db_json(account, d) for d in sorted(dbs)]}, {}
        if method == "GET" and len(parts) == 3 and parts[0] == "sqlDatabases" and parts[2] == "containers":
            if parts[1] not in dbs:
                return _error(404, "NotFound", f"Database {parts[1]} not found.")
            return 200, {"value": [self._container_json(account, parts[1], c) for c in dbs[parts[1]]]}, {}
        if (
            method == "POST"
            and len(parts) == 5
            and parts[0] == "sqlDatabases"
            and parts[4] == "retrieveContinuousBackupInformation"
        ):
            if parts[1] not in dbs or parts[3] not in dbs[parts[1]]:
                return _error(404, "NotFound", f"Container {parts[1]}/{parts[3]} not found.")
            latest = now() - dt.timedelta(seconds=self.latest_lag_s)
            result = {"continuousBackupInformation": {"latestRestorableTimestamp": iso(latest)}}
            loc = str((body or {}).get("location") or account["location"]).replace(" ", "").lower()
            op = self._operation(loc, Outcome("ok"), None, None, result)
            return 202, None, self._op_headers(op, version, async_op=False)
        return _error(404, "InvalidResourceType", f"The fake ARM does not serve {method} {rest}.")

    def _create(self, group: str, name: str, body: Any, version: str) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            return _error(400, "BadRequest", "The request body must be a database account.")
        if (group, name) in self.accounts:
            return _error(409, "Conflict", f"Database account {name} exists already.")
        props = body["properties"]
        if props.get("createMode") != "Restore":
            return _error(400, "BadRequest", "The fake ARM only creates accounts by restore.")
        restore = props.get("restoreParameters") or {}
        instance = str(restore.get("restoreSource", "")).rsplit("/", 1)[-1]
        source = self.restorable.get(instance)
        if source is None or source["id"].lower() != str(restore.get("restoreSource", "")).lower():
            return _error(
                404, "NotFound", f"Restorable database account {restore.get('restoreSource')} not found."
            )
        if not props.get("locations") or not body.get("location"):
            return _error(400, "BadRequest", "location and properties.locations are required.")
        location = str(body["location"])
        source_name = source["properties"]["accountName"]
        source_group = next((g for (g, n) in self.accounts if n == source_name), group)
        account = self._account_json(
            group,
            name,
            location,
            str(body.get("kind") or "GlobalDocumentDB"),
            "Session",  # not Strong: the target must set it (the guide's step after a restore)
            str(uuid.uuid4()),
            props.get("backupPolicy") or {"type": "Periodic"},
            state="Creating",
        )
        account["tags"] = dict(body.get("tags") or {})
        account["properties"]["createMode"] = "Restore"
        account["properties"]["restoreParameters"] = restore
        wanted = restore.get("databasesToRestore")
        source_dbs = self.databases.get((source_group, source_name), {})
        restored = (
            {
                d["databaseName"]: list(d.get("collectionNames") or source_dbs.get(d["databaseName"], []))
                for d in wanted
            }
            if wanted
            else {d: list(c) for d, c in source_dbs.items()}
        )
        key = (group, name)
        self.accounts[key] = account
        outcome = self.restore_outcomes.pop(0) if self.restore_outcomes else Outcome("ok")

        def online() -> None:
            account["properties"]["provisioningState"] = "Succeeded"
            for region in account["properties"]["locations"]:
                region["provisioningState"] = "Succeeded"
            self.databases[key] = restored

        def failed() -> None:
            account["properties"]["provisioningState"] = "Failed"

        op = self._operation(location.replace(" ", "").lower(), outcome, online, failed)
        return 200, account, self._op_headers(op, version)

    def _update(self, account: dict[str, Any], body: Any, version: str) -> tuple[int, Any, dict[str, str]]:
        props = (body or {}).get("properties") or {}
        policy = props.get("consistencyPolicy")
        account["properties"]["provisioningState"] = "Updating"

        def applied() -> None:
            account["properties"]["provisioningState"] = "Succeeded"
            if policy and self.consistency_sticks:
                account["properties"]["consistencyPolicy"].update(policy)

        loc = account["location"].replace(" ", "").lower()
        op = self._operation(loc, Outcome("ok"), applied, None)
        return 200, account, self._op_headers(op, version)

    def _db_json(self, account: dict[str, Any], database: str) -> dict[str, Any]:
        return {
            "id": f"{account['id']}/sqlDatabases/{database}",
            "name": database,
            "type": f"{API}/databaseAccounts/sqlDatabases",
            "properties": {"resource": {"id": database, "_rid": "r", "_ts": 1, "_etag": "e"}},
        }

    def _container_json(self, account: dict[str, Any], database: str, container: str) -> dict[str, Any]:
        return {
            "id": f"{account['id']}/sqlDatabases/{database}/containers/{container}",
            "name": container,
            "type": f"{API}/databaseAccounts/sqlDatabases/containers",
            "properties": {
                "resource": {
                    "id": container,
                    "partitionKey": {"paths": ["/concatenatedPartitionKey"], "kind": "Hash"},
                }
            },
        }

    # -- flexible servers --------------------------------------------------------------------

    def server_id(self, provider: str, group: str, name: str) -> str:
        group_id = f"/subscriptions/{self.subscription}/resourceGroups/{group}"
        return f"{group_id}/providers/{provider}/flexibleServers/{name}"

    def add_server(
        self,
        provider: str,
        group: str,
        name: str,
        *,
        location: str = "westeurope",
        retention_days: int | None = 7,
        earliest: dt.datetime | None = None,
        state: str = "Ready",
        network: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A source flexible server (its backups kept ``retention_days``, restorable from
        ``earliest``, default: a day ago)."""
        backup: dict[str, Any] = {"geoRedundantBackup": "Disabled"}
        if retention_days is not None:
            backup["backupRetentionDays"] = retention_days
            backup["earliestRestoreDate"] = iso(earliest or now() - dt.timedelta(days=1))
        server = {
            "id": self.server_id(provider, group, name),
            "name": name,
            "type": f"{provider}/flexibleServers",
            "location": location,
            "sku": {"name": "Standard_D2ds_v4", "tier": "GeneralPurpose"},
            "tags": {},
            "properties": {
                "state": state,
                "version": "15" if provider == POSTGRES_API else "8.0.21",
                "fullyQualifiedDomainName": f"{name}.{'postgres' if provider == POSTGRES_API else 'mysql'}"
                ".database.azure.com",
                "availabilityZone": "1",
                "backup": backup,
                "network": network or {"publicNetworkAccess": "Enabled"},
            },
        }
        with self._lock:
            self.servers[(provider, group, name)] = server
        return server

    def _server_request(
        self, method: str, provider: str, group: str, name: str, body: Any, version: str
    ) -> tuple[int, Any, dict[str, str]]:
        key = (provider, group, name)
        if method == "GET":
            op_id = self.server_ops.get(key)
            if op_id is not None and op_id in self.operations:
                self._advance(self.operations[op_id])  # a server looked at moves on, as in Azure
            server = self.servers.get(key)
            if server is None:
                return _error(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{provider}/flexibleServers/{name}' was not found.",
                )
            return 200, server, {}
        if method != "PUT":
            return _error(405, "MethodNotAllowed", f"The fake ARM does not serve {method} on a server.")
        if key in self.servers:
            return _error(409, "Conflict", f"Server {name} exists already.")
        props = (body or {}).get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict) or props.get("createMode") != "PointInTimeRestore":
            return _error(
                400, "BadRequest", "The fake ARM only creates flexible servers by point-in-time restore."
            )
        source = next(
            (
                s
                for s in self.servers.values()
                if s["id"].lower() == str(props.get("sourceServerResourceId")).lower()
            ),
            None,
        )
        if source is None:
            return _error(
                404, "ResourceNotFound", f"Source server {props.get('sourceServerResourceId')} not found."
            )
        field_name = TIME_FIELD[provider]
        wanted = props.get(field_name)
        if not isinstance(wanted, str):
            return _error(400, "InvalidParameterValue", f"Invalid value given for parameter {field_name}.")
        try:
            point = dt.datetime.fromisoformat(wanted.replace("Z", "+00:00"))
        except ValueError:
            return _error(400, "InvalidParameterValue", f"{field_name} {wanted!r} is not a date-time.")
        earliest = dt.datetime.fromisoformat(
            source["properties"]["backup"]["earliestRestoreDate"].replace("Z", "+00:00")
        )
        if not earliest <= point <= now():
            return _error(
                400,
                "PointInTimeRestoreTimeInvalid",
                f"The restore time {wanted} is outside the restore window.",
            )
        server = json.loads(json.dumps(source))
        server.update(
            id=self.server_id(provider, group, name),
            name=name,
            location=str(body.get("location") or source["location"]),
            tags=dict(body.get("tags") or {}),
        )
        service = "postgres" if provider == POSTGRES_API else "mysql"
        server["properties"].update(
            state="Provisioning", fullyQualifiedDomainName=f"{name}.{service}.database.azure.com"
        )
        self.servers[key] = server
        outcome = self.server_outcomes.pop(0) if self.server_outcomes else Outcome("ok")

        def ready() -> None:
            server["properties"]["state"] = "Ready"

        def failed() -> None:
            self.servers.pop(key, None)

        op = self._operation(str(server["location"]), outcome, ready, failed)
        self.server_ops[key] = op.op_id
        return 202, None, self._op_headers(op, version, provider=provider)


def _error(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, {}


class _Handler(BaseHTTPRequestHandler):
    arm: FakeArm
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        arm = self.arm
        with arm._lock:
            arm.requests.append(Recorded(self.command, parts.path, query, headers, body))
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer "):
                status, payload, extra = _error(401, "AuthenticationFailed", "Authentication failed.")
            elif auth == f"Bearer {EXPIRED_TOKEN}":
                status, payload, extra = _error(
                    401,
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time '11/27/2026 9:00:00 AM' is earlier than "
                    "current UTC time.",
                )
                extra = {
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", '
                    'error="invalid_token", error_description="The access token has expired."'
                }
            elif auth != f"Bearer {GOOD_TOKEN}":
                status, payload, extra = _error(
                    401, "InvalidAuthenticationToken", "The access token is invalid."
                )
            else:
                status, payload, extra = arm.handle(self.command, parts.path, query, body)
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _serve


def _self_signed(cert_file: str, key_file: str) -> None:
    """A self-signed certificate for 127.0.0.1 and localhost (cryptography comes with azure-identity)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-arm.localhost")])
    start = now() - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    Path(cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_file).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
