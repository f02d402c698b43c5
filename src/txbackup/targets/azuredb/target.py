"""Azure Database for PostgreSQL and for MySQL flexible servers (kinds ``azure-postgres``
and ``azure-mysql``): point-in-time restore through Azure Resource Manager.

Settings::

    [[targets]]
    name = "bank-pg"
    kind = "azure-postgres"                     # or "azure-mysql"
    subscription_id = "00000000-0000-0000-0000-000000000000"   # required
    resource_group = "bank-rg"                  # required
    server = "bank-pg"                          # required: the flexible server
    restored_name = "{server}-{set}"            # the new server: {server}, {set} (the set id, lowercased)
    min_pause = "10s"                           # the guide's rule; shorter is allowed, with a warning
    tenant_id = "..."                           # with client_id and client_secret_*: a service
    client_id = "..."                           # principal; default: DefaultAzureCredential
    client_secret_env = "AZURE_SECRET"          # (or client_secret_file)
    management_endpoint = "https://..."         # optional: the ARM endpoint (tests, sovereign clouds)
    management_ca_file = "/etc/ssl/arm-ca.pem"  # optional: CA bundle for that endpoint
    poll_interval = "30s"                       # how often to look at the restore in progress
    wait_timeout = "12h"                        # longest wait for the new server to be Ready

A flexible server's backups are automatic (retention 1-35 days) and its logs
are backed up continuously, so nothing is exported but a record. Preflight
checks the server exists with these credentials, is Ready and keeps backups,
and notes the window (from ``earliestRestoreDate``). Capture does nothing: the
engine holds the pause for ``min_pause`` and the restore point is its
midpoint. The set records the server's id, location, SKU, version, network
and availability zone (``server.json``).

Restore (``azuredb.restore``) creates a **new** server (``restored_name``, or
``--to NAME=servername``) from the source at the point, and prints its host
name: ScalarDB's contact points must change to it. Nothing existing is touched.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from txbackup.clock import iso_ms
from txbackup.durations import MAX_CALL_S
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import MemoryJournal, StepJournal
from txbackup.safepaths import shown
from txbackup.settings import check_keys, setting_duration, setting_opt_str, setting_str
from txbackup.targets import azureauth, pitr
from txbackup.targets.azureauth import CredentialFactory, default_credential, read_credential
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope, dsn_only
from txbackup.targets.pitr import PITR_MIN_PAUSE_S, check_min_pause, log_warnings
from txbackup.targets.pitr.journal import FaultHook
from txbackup.targets.pitr.polling import Poller

log = logging.getLogger(__name__)

ARTIFACT = "server.json"
READY = "Ready"
DEFAULT_RESTORED_NAME = "{server}-{set}"
_SAMPLE_SET_ID = "20261127t101500z-3f9a"
_SERVER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])")
_KEYS = {
    "subscription_id",
    "resource_group",
    "server",
    "restored_name",
    "min_pause",
    "management_endpoint",
    "management_ca_file",
    "poll_interval",
    "wait_timeout",
    *azureauth.KEYS,
}


def check_server_name(name: str, culprit: str) -> str:
    if not _SERVER_NAME.fullmatch(name):
        raise UsageError(
            f"{culprit}: {name!r} is not a valid flexible server name "
            "(3-63 lowercase letters, digits and hyphens, not at either end)"
        )
    return name


def restored_name(pattern: str, server: str, set_id: str, culprit: str) -> str:
    return pitr.restored_name(
        "restored_name",
        pattern,
        {"server": server},
        set_id,
        check_server_name,
        "name the server with --to NAME=servername",
        culprit,
    )


def _flavor(kind: str) -> Any:
    from txbackup.targets.azuredb.arm import MYSQL, POSTGRES

    return POSTGRES if kind == POSTGRES.kind else MYSQL


class FlexCapture:
    """Nothing to hold: the restore point is the pause midpoint; this records the server."""

    def __init__(self, target: FlexTarget, set_id: str, record: Mapping[str, Any]) -> None:
        self.target = target
        self.record: dict[str, Any] = {**record, "set_id": set_id}

    def position(self) -> Mapping[str, Any]:
        return dict(self.record)

    def export(self, out: ArtifactWriter) -> None:
        """Check the server is still the one captured, then write ``server.json``."""
        now = self.target.inspect()
        if now["id"].lower() != str(self.record["id"]).lower():
            raise self.target.error(f"server {self.target.server} changed identity during the backup")
        with out.open(ARTIFACT) as stream:
            stream.write(json.dumps(self.record, indent=2, sort_keys=True).encode() + b"\n")

    def release(self) -> None:
        return None


class FlexTarget:
    def __init__(
        self,
        kind: str,
        name: str,
        subscription_id: str,
        resource_group: str,
        server: str,
        *,
        credential: CredentialFactory | None = None,
        restored_name: str = DEFAULT_RESTORED_NAME,
        min_pause_s: float = PITR_MIN_PAUSE_S,
        management_endpoint: str | None = None,
        management_ca_file: str | None = None,
        poll_s: float = 30.0,
        wait_timeout_s: float = 12 * 3600.0,
    ) -> None:
        self.kind = kind
        self.name = name
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.server = server
        self.credential = credential or default_credential
        self.restored_name = restored_name
        self.min_pause_s = min_pause_s
        self.warnings = check_min_pause(name, min_pause_s)
        self.management_endpoint = management_endpoint
        self.management_ca_file = management_ca_file
        self.poll_s = poll_s
        self.wait_timeout_s = wait_timeout_s
        self.label = f'target "{name}" ({kind} {server})'
        self.fault_hook: FaultHook | None = None  # tests: simulate a crash after a restore step
        self._arm: Any = None
        self._record: dict[str, Any] | None = None

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def arm(self) -> Any:
        if self._arm is None:
            from txbackup.targets.azuredb.arm import FlexArm

            self._arm = FlexArm(
                self.label,
                _flavor(self.kind),
                self.subscription_id,
                self.resource_group,
                self.credential,
                endpoint=self.management_endpoint,
                ca_file=self.management_ca_file,
            )
        return self._arm

    def describe(self) -> Mapping[str, Any]:
        found: dict[str, Any] = {
            "kind": self.kind,
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group,
            "server": self.server,
        }
        if self.management_endpoint:
            found["management_endpoint"] = self.management_endpoint
        return found

    def preflight(self) -> None:
        log_warnings(self.warnings)
        self._record = self.inspect()

    def inspect(self) -> dict[str, Any]:
        """The source server (Ready, backups kept), as a set records it."""
        from txbackup.targets.azuredb.restore import earliest_of

        arm = self.arm()
        server = arm.server(self.server)
        if server is None:
            raise self.error(f"server {self.server} not found in {arm.where()}")
        props = server.get("properties") or {}
        state = str(props.get("state") or "")
        if state and state != READY:
            raise self.error(f"server {self.server} is {state}, not Ready")
        backup = props.get("backup") or {}
        retention = backup.get("backupRetentionDays")
        if not isinstance(retention, int) or retention < 1:
            raise self.error(
                f"server {self.server} reports no backup retention ({retention!r}): "
                "point-in-time restore needs its automatic backups"
            )
        earliest = earliest_of(server)
        log.info(
            "%s: backups kept %d day(s); restorable from %s",
            self.label,
            retention,
            iso_ms(earliest) if earliest else "?",
        )
        network = props.get("network") or {}
        kept_network = {
            k: network[k]
            for k in ("delegatedSubnetResourceId", "privateDnsZoneArmResourceId", "publicNetworkAccess")
            if isinstance(network.get(k), str) and network[k]
        }
        return {
            "server": str(server.get("name") or self.server),
            "id": str(server.get("id") or arm.server_id(self.server)),
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group,
            "location": str(server.get("location") or ""),
            "sku": {k: str(v) for k, v in (server.get("sku") or {}).items() if k in ("name", "tier")},
            "version": str(props.get("version") or ""),
            "availability_zone": str(props.get("availabilityZone") or ""),
            "network": kept_network,
            "fqdn": str(props.get("fullyQualifiedDomainName") or ""),
            "backup_retention_days": retention,
            "earliest_restore_date": iso_ms(earliest) if earliest else None,
        }

    def capture(self, set_id: str) -> FlexCapture:
        record = self._record if self._record is not None else self.inspect()
        return FlexCapture(self, set_id, record)

    def check_record(self, record: Recorded) -> None:
        """The set is of the configured server (its id in the configured subscription and
        resource group, of this kind's provider): a restore creates a server from what it names."""
        scope = Scope(self.label, record)
        for name in record.names:
            if name != ARTIFACT:
                scope.fail(f"artifact {shown(name, 80)} is not {ARTIFACT}")
        position = record.position
        scope.same(
            scope.text(position.get("server"), "the position's server"),
            self.server,
            "the position",
            "of server",
        )
        expected = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{_flavor(self.kind).provider}/flexibleServers/{self.server}"
        )
        found = scope.text(position.get("id"), "the position's id")
        if found.lower() != expected.lower():
            scope.fail(f"the position's id {shown(found, 200)} is not server {expected}")
        scope.mapping(position.get("network"), "the position's network", required=False)
        scope.mapping(position.get("sku"), "the position's sku", required=False)
        described = scope.description(self.kind)
        if described is not None:
            scope.same(described.get("server"), self.server, "the description", "of server")

    def _new(self, dest: Mapping[str, str] | None) -> str | None:
        dsn = dsn_only(dest, self.label)
        return None if dsn is None else check_server_name(dsn, self.label)

    def check_destination(self, dest: Mapping[str, str] | None, record: Recorded | None = None) -> None:
        """A ``--to`` that is not a server name is refused before the storage is read."""
        self._new(dest)

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.check_record(Recorded.of_reader(src))  # before anything is contacted
        from txbackup.targets.azuredb.restore import RestoreJob

        new = self._new(dest)
        set_id = str(src.position.get("set_id") or "")
        if new is None:
            if not set_id:
                raise self.error("the backup set records no set id: name the new server with --to")
            new = restored_name(self.restored_name, self.server, set_id, self.label)
        journal: StepJournal = getattr(src, "journal", None) or MemoryJournal()
        poller = Poller(self.label, self.poll_s, self.wait_timeout_s)
        RestoreJob(
            self.arm(), poller, journal, src.position, src.restore_point, new, hook=self.fault_hook
        ).run()


def from_config(kind: str, name: str, conf: Mapping[str, Any]) -> FlexTarget:
    culprit = f'target "{name}"'
    credential = read_credential(conf, culprit)  # first: a secret in the file is said as such
    check_keys(conf, _KEYS, culprit=culprit)
    server = check_server_name(setting_str(conf, "server", culprit=culprit), culprit)
    pattern = setting_str(conf, "restored_name", DEFAULT_RESTORED_NAME, culprit=culprit)
    if "restored_name" in conf:
        restored_name(pattern, server, _SAMPLE_SET_ID, culprit)
    return FlexTarget(
        kind,
        name,
        setting_str(conf, "subscription_id", culprit=culprit),
        setting_str(conf, "resource_group", culprit=culprit),
        server,
        credential=credential,
        restored_name=pattern,
        min_pause_s=setting_duration(conf, "min_pause", "10s", culprit=culprit, maximum=MAX_CALL_S),
        management_endpoint=setting_opt_str(conf, "management_endpoint", culprit=culprit),
        management_ca_file=setting_opt_str(conf, "management_ca_file", culprit=culprit),
        poll_s=setting_duration(conf, "poll_interval", "30s", culprit=culprit),
        wait_timeout_s=setting_duration(conf, "wait_timeout", "12h", culprit=culprit),
    )
