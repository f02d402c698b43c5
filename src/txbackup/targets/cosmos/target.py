"""Azure Cosmos DB accounts (kind ``cosmos``): continuous backup, point-in-time restore.

Settings::

    [[targets]]
    name = "cosmos"
    kind = "cosmos"
    subscription_id = "00000000-0000-0000-0000-000000000000"   # required
    resource_group = "bank-rg"                  # required
    account = "bank"                            # required: the Cosmos DB account (NoSQL API)
    databases = { bank = ["accounts", "transfers"] }   # or ["bank"] (whole databases);
                                                # omitted: the whole account
    coordinator_database = "coordinator"        # ScalarDB's; added to databases ("" for none)
    system_database = "scalardb"                # ScalarDB's metadata; added to databases ("" for none)
    restored_account_name = "{account}-restored-{set}"   # {account}, {set} (the set id, lowercased)
    location = "westeurope"                     # where to restore (default: the source's location)
    min_pause = "10s"                           # the guide's rule; shorter is allowed, with a warning
    tenant_id = "..."                           # with client_id and client_secret_*: a service
    client_id = "..."                           # principal; default: DefaultAzureCredential
    client_secret_env = "AZURE_SECRET"          # (or client_secret_file)
    management_endpoint = "https://..."         # optional: the ARM endpoint (tests, proxies)
    management_ca_file = "/etc/ssl/arm-ca.pem"  # optional: CA bundle for that endpoint
    poll_interval = "30s"                       # how often to look at operations in progress
    wait_timeout = "12h"                        # longest wait for the restored account
    restore_window_wait = "10m"                 # how long to wait for the window to reach the point
    after_restore = ["/opt/restore-hook", "--repair"]   # optional command run once restored
    after_restore_timeout = "1h"

Cosmos DB backs itself up continuously when the account has the Continuous
backup policy, so nothing is exported but a record of the account. Preflight
(before the pause) checks that the account exists with these credentials, that
its backup policy is Continuous (else it says how to switch), that every
configured database and container exists, and notes the restorable window.
Capture does nothing: the engine holds the pause for ``min_pause`` and the
restore point is its midpoint. The set records the account's id, location,
instance id (its restorable account, the restore source), consistency, kind,
backup tier and the databases/containers, in the manifest and in the
artifact ``account.json``.

Restore (``cosmos.restore``) creates a **new** account from the restorable
account at the restore point (create mode Restore, point in time), waits until
it is online, sets its default consistency to Strong and reads it back, then
runs ``after_restore`` or says what is left to do: ScalarDB's stored procedures
are not restored (the schema loader's ``--repair-all`` re-creates them), and the
applications must be pointed at the new account. Nothing existing is touched;
``--to NAME=accountname`` names the new account.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from txbackup.clock import iso_ms
from txbackup.durations import MAX_CALL_S
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import MemoryJournal, StepJournal
from txbackup.safepaths import shown
from txbackup.secrets import check_secret
from txbackup.settings import check_keys, name_list, setting_duration, setting_opt_str, setting_str
from txbackup.targets import pitr
from txbackup.targets.azureauth import CredentialFactory, default_credential, read_credential
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope, dsn_only
from txbackup.targets.pitr import PITR_MIN_PAUSE_S, check_min_pause, log_warnings

if TYPE_CHECKING:
    from txbackup.targets.cosmos.azure import Arm

log = logging.getLogger(__name__)

KIND = "cosmos"
ACCOUNT_ARTIFACT = "account.json"
STRONG = "Strong"
CONTINUOUS = "Continuous"
NOSQL_KIND = "GlobalDocumentDB"
DEFAULT_RESTORED_NAME = "{account}-restored-{set}"
_ACCOUNT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,42})[a-z0-9]|[a-z0-9]{3}")
_SAMPLE_SET_ID = "20261127t101500z-3f9a"  # set ids all have this shape
_RESTORABLE = re.compile(
    r"/subscriptions/([^/]+)/providers/Microsoft\.DocumentDB/locations/([^/]+)/restorableDatabaseAccounts/([^/]+)",
    re.IGNORECASE,
)
"""A restorable account's id (the restore source): subscription, location, instance id."""
_KEYS = {
    "subscription_id",
    "resource_group",
    "account",
    "databases",
    "coordinator_database",
    "system_database",
    "restored_account_name",
    "location",
    "min_pause",
    "tenant_id",
    "client_id",
    "client_secret_env",
    "client_secret_file",
    "management_endpoint",
    "management_ca_file",
    "poll_interval",
    "wait_timeout",
    "restore_window_wait",
    "after_restore",
    "after_restore_timeout",
}

Databases = dict[str, list[str]]
"""Database name -> its containers to restore ([] = the whole database)."""


def azure() -> ModuleType:
    """The Azure side of this target (``cosmos.azure``): the SDK is needed from here on."""
    try:
        from txbackup.targets.cosmos import azure as cosmos_azure
    except ImportError as exc:
        raise TargetError(
            f"cosmos targets need azure-mgmt-cosmosdb and azure-identity ({exc}): "
            "pip install azure-mgmt-cosmosdb azure-identity"
        ) from None
    return cosmos_azure


def check_account_name(name: str, culprit: str) -> str:
    if len(name) > 44 or "--" in name or not _ACCOUNT_NAME.fullmatch(name):
        raise UsageError(
            f"{culprit}: {name!r} is not a valid Cosmos DB account name "
            "(3-44 characters: lowercase letters, digits and single hyphens, not at either end)"
        )
    return name


def restored_name(pattern: str, account: str, set_id: str, culprit: str) -> str:
    return pitr.restored_name(
        "restored_account_name",
        pattern,
        {"account": account},
        set_id,
        check_account_name,
        "name the account with --to NAME=accountname",
        culprit,
    )


class CosmosCapture:
    """Nothing to hold: the restore point is the pause midpoint; this records the account."""

    def __init__(self, target: CosmosTarget, set_id: str, record: Mapping[str, Any]) -> None:
        self.target = target
        self.set_id = set_id
        self.record: dict[str, Any] = {**record, "set_id": set_id}

    def position(self) -> Mapping[str, Any]:
        return dict(self.record)

    def export(self, out: ArtifactWriter) -> None:
        """Check the account is still the one captured (same instance, continuous), then
        write ``account.json``: the record, for people and for restores by hand."""
        arm = self.target.arm()
        account = arm.account(self.target.account)
        if account is None:
            raise self.target.error(f"account {self.target.account} disappeared during the backup")
        now = azure().account_summary(account)
        if now["instance_id"] != self.record["instance_id"]:
            raise self.target.error(
                f"account {self.target.account} was re-created during the backup "
                f"(instance {self.record['instance_id']} -> {now['instance_id']})"
            )
        if now["backup_policy"] != CONTINUOUS:
            raise self.target.error(f"account {self.target.account} left the Continuous backup policy")
        document = {
            **self.record,
            "restore_point": "the set's restore point (its pause midpoint, see the manifest)",
            "restore_by_hand": (
                f"az cosmosdb restore --resource-group {self.target.resource_group} "
                f"--account-name {self.target.account} --target-database-account-name NEW "
                f"--restore-timestamp RESTORE_POINT --location {self.record['location']}; then "
                "az cosmosdb update --default-consistency-level Strong, and the schema loader's "
                "--repair-all to re-create the stored procedures"
            ),
        }
        with out.open(ACCOUNT_ARTIFACT) as stream:
            stream.write(json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")

    def release(self) -> None:
        return None


class CosmosTarget:
    kind = KIND

    def __init__(
        self,
        name: str,
        subscription_id: str,
        resource_group: str,
        account: str,
        databases: Databases | None = None,
        *,
        credential: CredentialFactory | None = None,
        restored_account_name: str = DEFAULT_RESTORED_NAME,
        location: str | None = None,
        min_pause_s: float = PITR_MIN_PAUSE_S,
        management_endpoint: str | None = None,
        management_ca_file: str | None = None,
        poll_s: float = 30.0,
        wait_timeout_s: float = 12 * 3600.0,
        window_wait_s: float = 600.0,
        after_restore: list[str] | None = None,
        after_restore_timeout_s: float = 3600.0,
    ) -> None:
        self.name = name
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.account = account
        self.databases = databases
        self.credential = credential or default_credential
        self.restored_account_name = restored_account_name
        self.location = location.replace(" ", "").lower() if location else None
        self.min_pause_s = min_pause_s
        self.warnings = check_min_pause(name, min_pause_s)
        self.management_endpoint = management_endpoint
        self.management_ca_file = management_ca_file
        self.poll_s = poll_s
        self.wait_timeout_s = wait_timeout_s
        self.window_wait_s = window_wait_s
        self.after_restore = after_restore
        self.after_restore_timeout_s = after_restore_timeout_s
        self.label = f'target "{name}" (cosmos {account})'
        self._arm: Arm | None = None
        self._record: dict[str, Any] | None = None

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def arm(self) -> Arm:
        if self._arm is None:
            self._arm = azure().Arm(
                self.label,
                self.subscription_id,
                self.resource_group,
                self.credential,
                endpoint=self.management_endpoint,
                ca_file=self.management_ca_file,
                poll_s=self.poll_s,
            )
        return self._arm

    def describe(self) -> Mapping[str, Any]:
        found: dict[str, Any] = {
            "kind": KIND,
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group,
            "account": self.account,
            "databases": self.databases,
        }
        if self.management_endpoint:
            found["management_endpoint"] = self.management_endpoint
        return found

    def preflight(self) -> None:
        log_warnings(self.warnings)
        self._record = self.inspect()

    def inspect(self) -> dict[str, Any]:
        """Everything preflight checks; returns what a capture records."""
        arm = self.arm()
        account = arm.account(self.account)
        if account is None:
            raise self.error(f"account {self.account} not found in {arm.where()}")
        record = azure().account_summary(account)
        state = record.pop("provisioning_state")
        if state and state != "Succeeded":
            raise self.error(f"account {self.account} is {state}, not ready (provisioningState)")
        if record["backup_policy"] != CONTINUOUS:
            raise self.error(
                f"account {self.account} has the {record['backup_policy'] or 'unknown'} backup policy: "
                "point-in-time restore needs the Continuous backup policy; switch it with "
                f"az cosmosdb update --name {self.account} --resource-group {self.resource_group} "
                "--backup-policy-type Continuous --continuous-tier Continuous7Days "
                "(one-way; the migration takes a while, then back up again)"
            )
        if record["kind"] != NOSQL_KIND:
            raise self.error(
                f"account {self.account} is of kind {record['kind']}: "
                f"ScalarDB uses the NoSQL API ({NOSQL_KIND})"
            )
        if not record["instance_id"]:
            raise self.error(f"account {self.account}: Azure did not return its instance id")
        seen = arm.sql_databases(self.account)
        wanted = self.databases
        if wanted is not None:
            missing = [d for d in wanted if d not in seen]
            missing += [f"{d}/{c}" for d, cs in wanted.items() if d in seen for c in cs if c not in seen[d]]
            if missing:
                raise self.error(
                    f"database(s)/container(s) {', '.join(missing)} not found in account {self.account} "
                    "(created by the ScalarDB schema loader yet?)"
                )
            databases = {d: list(cs) or list(seen[d]) for d, cs in wanted.items()}
        else:
            databases = seen
        restorable = arm.restorable_account(record["location"], record["instance_id"])
        if restorable is None or restorable.properties is None:
            raise self.error(
                f"account {self.account}: no restorable account for instance {record['instance_id']} in "
                f"{record['location']} (continuous backup not active yet?)"
            )
        oldest = azure().parse_azure_time(restorable.properties.oldest_restorable_time)
        if record["consistency"] != STRONG:
            log.warning(
                "%s: the account's default consistency is %s; ScalarDB needs Strong",
                self.label,
                record["consistency"],
            )
        log.info(
            "%s: continuous backup (%s); restorable from %s",
            self.label,
            record["backup_tier"],
            iso_ms(oldest) if oldest else "?",
        )
        return {
            **record,
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group,
            "restore_source": restorable.id,
            "oldest_restorable_time": iso_ms(oldest) if oldest else None,
            "whole_account": wanted is None,
            "databases": databases,
        }

    def capture(self, set_id: str) -> CosmosCapture:
        record = self._record if self._record is not None else self.inspect()
        return CosmosCapture(self, set_id, record)

    def check_record(self, record: Recorded) -> None:
        """The set is of the configured account (its position and restore source in the
        configured subscription), and every database and container it names is a
        configured one (any, when the whole account is backed up): a restore creates
        an account holding what the set names."""
        scope = Scope(self.label, record)
        for name in record.names:
            if name != ACCOUNT_ARTIFACT:
                scope.fail(f"artifact {shown(name, 80)} is not {ACCOUNT_ARTIFACT}")
        position = record.position
        account = scope.text(position.get("account"), "the position's account")
        scope.same(account, self.account, "the position's account", "account")
        for key, expected in (
            ("subscription_id", self.subscription_id),
            ("resource_group", self.resource_group),
        ):
            value = scope.text(position.get(key), f"the position's {key}", required=False)
            scope.same(
                value.lower() or None, expected.lower(), f"the position's {key}", key.replace("_", " ")
            )
        source = scope.text(position.get("restore_source"), "the position's restore_source")
        instance = scope.text(position.get("instance_id"), "the position's instance_id")
        match = _RESTORABLE.fullmatch(source)
        if match is None or match.group(3) != instance:
            scope.fail(
                f"the position's restore_source {shown(source, 160)} is not restorable account {instance!r}"
            )
        scope.same(
            match.group(1).lower(),
            self.subscription_id.lower(),
            "the position's restore_source",
            "in subscription",
        )
        whole = position.get("whole_account")
        if whole is not None and not isinstance(whole, bool):
            scope.fail(f"the position's whole_account is a {type(whole).__name__}, not a boolean")
        if whole and self.databases is not None:
            scope.fail("the position covers the whole account; the cluster file lists databases")
        self._check_databases(scope, position.get("databases"), "the position's databases")
        described = scope.description(KIND)
        if described is not None:
            scope.same(described.get("account"), self.account, "the description's account", "account")
            self._check_databases(scope, described.get("databases"), "the description's databases")

    def _check_databases(self, scope: Scope, value: object, where: str) -> None:
        for database, containers in scope.mapping(value, where, required=False).items():
            inside = f"{where}[{shown(database, 80)}]"
            listed = [scope.text(c, inside) for c in scope.sequence(containers, inside)]
            if self.databases is not None:  # else the whole account: any name
                wanted = self.databases[scope.covered(database, self.databases, where, "database")]
                if wanted:  # else the whole database
                    scope.all_covered(listed, wanted, inside, "container")

    def _account(self, dest: Mapping[str, str] | None) -> str | None:
        dsn = dsn_only(dest, self.label)
        return None if dsn is None else check_account_name(dsn, self.label)

    def check_destination(self, dest: Mapping[str, str] | None, record: Recorded | None = None) -> None:
        """A ``--to`` that is not an account name is refused before the storage is read."""
        self._account(dest)

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.check_record(Recorded.of_reader(src))  # before anything is contacted
        azure()
        from txbackup.targets.cosmos.restore import Options, RestoreJob

        name = self._account(dest)
        position = src.position
        if position.get("account") and position.get("account") != self.account:
            raise self.error(
                f"the backup set is of account {position.get('account')}; "
                f"the cluster file says {self.account}"
            )
        set_id = str(position.get("set_id") or "")
        if name is None:
            if not set_id:
                raise self.error("the backup set records no set id: name the new account with --to")
            name = restored_name(self.restored_account_name, self.account, set_id, self.label)
        journal: StepJournal = getattr(src, "journal", None) or MemoryJournal()
        options = Options(
            self.label,
            self.location,
            self.poll_s,
            self.wait_timeout_s,
            self.window_wait_s,
            self.after_restore,
            self.after_restore_timeout_s,
        )
        RestoreJob(options, self.arm(), journal, position, src.restore_point, name).run()


def parse_databases(conf: Mapping[str, Any], culprit: str) -> Databases | None:
    """``databases``: a table {database = [containers]} or a list of whole databases;
    ScalarDB's coordinator and system databases are added (whole) unless set to ""."""
    value = conf.get("databases")
    if value is None:
        return None
    if isinstance(value, list):
        found: Databases = {d: [] for d in name_list(value, "databases", culprit=culprit, items="names")}
    elif isinstance(value, dict):
        found = {}
        for database, containers in value.items():
            what = f"databases.{database}"
            listed = [containers] if isinstance(containers, str) else containers
            found[str(database)] = name_list(listed, what, culprit=culprit, items="names")
    else:
        raise UsageError(f'{culprit}: databases must be a table such as {{ bank = ["accounts"] }} or a list')
    if not found:
        raise UsageError(f"{culprit}: databases must not be empty (omit it to restore the whole account)")
    for key, default in (("coordinator_database", "coordinator"), ("system_database", "scalardb")):
        extra = conf.get(key, default)
        if not isinstance(extra, str):
            raise UsageError(f'{culprit}: {key} must be a database name, or "" for none')
        if extra and extra not in found:
            found[extra] = []
    return found


def from_config(name: str, conf: Mapping[str, Any]) -> CosmosTarget:
    culprit = f'target "{name}"'
    check_secret(conf, "client_secret", culprit=culprit)  # a secret in the file: said before unknown keys
    check_keys(conf, _KEYS, culprit=culprit)
    account = check_account_name(setting_str(conf, "account", culprit=culprit), culprit)
    pattern = setting_str(conf, "restored_account_name", DEFAULT_RESTORED_NAME, culprit=culprit)
    if "restored_account_name" in conf:
        restored_name(pattern, account, _SAMPLE_SET_ID, culprit)
    credential = read_credential(conf, culprit)
    after = conf.get("after_restore")
    if isinstance(after, str):
        after = [after]
    if after is not None and (
        not after or not isinstance(after, list) or not all(isinstance(arg, str) and arg for arg in after)
    ):
        raise UsageError(f'{culprit}: after_restore must be a command, as a list: ["/path/to/tool", "arg"]')
    return CosmosTarget(
        name,
        setting_str(conf, "subscription_id", culprit=culprit),
        setting_str(conf, "resource_group", culprit=culprit),
        account,
        parse_databases(conf, culprit),
        credential=credential,
        restored_account_name=pattern,
        location=setting_opt_str(conf, "location", culprit=culprit),
        min_pause_s=setting_duration(conf, "min_pause", "10s", culprit=culprit, maximum=MAX_CALL_S),
        management_endpoint=setting_opt_str(conf, "management_endpoint", culprit=culprit),
        management_ca_file=setting_opt_str(conf, "management_ca_file", culprit=culprit),
        poll_s=setting_duration(conf, "poll_interval", "30s", culprit=culprit),
        wait_timeout_s=setting_duration(conf, "wait_timeout", "12h", culprit=culprit),
        window_wait_s=setting_duration(conf, "restore_window_wait", "10m", culprit=culprit),
        after_restore=after,
        after_restore_timeout_s=setting_duration(conf, "after_restore_timeout", "1h", culprit=culprit),
    )
