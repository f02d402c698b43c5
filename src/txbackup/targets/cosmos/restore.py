"""Restoring a Cosmos DB account to the set's restore point, as a resumable job.

A Cosmos DB point-in-time restore always creates a new account. The steps,
each recorded in the job's journal once it has taken effect and skipped when
the job is resumed (``txbackup restore --resume JOB``):

=======================  ==================================================
``plan``                 check the restore point lies in the source's
                         restorable window (refused otherwise, the window
                         shown), that the new account's name is free;
                         record the name, the point and the restore source
``requested/N``          ask Azure for the restored account (create mode
                         Restore, point in time, the recorded databases and
                         containers); record the operation's continuation
                         token (attempt N)
``failed/N``             Azure reported attempt N failed (its message is
                         recorded); a resumed job deletes the failed account
                         (it is this job's: same name, source and point)
                         and asks again as attempt N+1
``online``               the account is online (provisioningState Succeeded)
``consistency-strong``   default consistency set to Strong and read back as
                         Strong (ScalarDB needs it; the ScalarDB guide says
                         to set it after every restore)
``after-restore``        the configured ``after_restore`` command ran, or
                         what is left to do was reported
=======================  ==================================================

Waiting for the account resumes from the recorded continuation token, so an
interrupted or timed-out wait goes on with the same operation in Azure. An
account of the new name that this job did not make is never touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.polling import LROPoller
from azure.mgmt.cosmosdb.models import (
    ConsistencyPolicy,
    ContinuousModeBackupPolicy,
    ContinuousModeProperties,
    DatabaseAccountCreateUpdateParameters,
    DatabaseAccountCreateUpdateProperties,
    DatabaseAccountGetResults,
    DatabaseAccountUpdateParameters,
    DatabaseAccountUpdateProperties,
    DatabaseRestoreResource,
    Location,
    RestoreParameters,
)

from txbackup import procs
from txbackup.clock import iso_ms, utc_now
from txbackup.errors import TargetError
from txbackup.jobs import StepJournal
from txbackup.targets.cosmos.azure import FAILED_STATES, SUCCEEDED, Arm, AzureFailed, parse_azure_time, text
from txbackup.targets.pitr.job import PointInTimeJob
from txbackup.targets.pitr.polling import Poller

log = logging.getLogger(__name__)

STRONG = "Strong"


def _state(account: DatabaseAccountGetResults) -> str:
    return text(account.properties.provisioning_state) or "" if account.properties is not None else ""


def _consistency(account: DatabaseAccountGetResults) -> str:
    policy = account.properties.consistency_policy if account.properties is not None else None
    return text(policy.default_consistency_level) or "unknown" if policy is not None else "unknown"


@dataclass(frozen=True)
class Options:
    """What a restore takes from the target's settings (the target builds it: this
    module knows nothing of the target, so the two do not import each other)."""

    label: str
    location: str | None
    poll_s: float
    wait_timeout_s: float
    window_wait_s: float
    after_restore: list[str] | None
    after_restore_timeout_s: float


class RestoreJob(PointInTimeJob):
    """One restore of one Cosmos DB target (see the module doc)."""

    def __init__(
        self,
        options: Options,
        arm: Arm,
        journal: StepJournal,
        position: Mapping[str, Any],
        restore_point: str | None,
        name: str,
    ) -> None:
        self.position = dict(position)
        for key in ("restore_source", "instance_id", "location", "account"):
            if not self.position.get(key):
                raise TargetError(f"{options.label}: the backup set records no {key} (not a cosmos set?)")
        poller = Poller(options.label, options.poll_s, options.wait_timeout_s)
        super().__init__(options.label, journal, restore_point, poller)
        self.target = options
        self.arm = arm
        self.name = name
        self.source = str(self.position["restore_source"])
        self.location = options.location or str(self.position["location"])

    def done(self, step: str, data: Mapping[str, Any] | None = None) -> None:
        self.journal.done(step, data)

    def run(self) -> None:
        self._plan()
        self._online()
        self._strong()
        self._after()

    # -- plan ------------------------------------------------------------------

    def _plan(self) -> None:
        planned = self.plan(self._check)
        self.name = str(planned["account"])  # the account this job started, whatever the pattern says now
        self.location = str(planned["location"])

    def _check(self) -> dict[str, Any]:
        self.check_window(
            f"source account {self.position['account']}", self._window, self.target.window_wait_s
        )
        if self.arm.account(self.name) is not None:
            raise TargetError(
                f"{self.label}: account {self.name} exists already; a restore never replaces an account: "
                "name another with --to NAME=accountname (or delete it first)"
            )
        return {"account": self.name, "location": self.location, "restore_source": self.source}

    def _window(self) -> tuple[datetime, datetime]:
        """The source's restorable window now: oldest restorable time .. the latest
        restorable time of every recorded container (or the deletion time)."""
        where = str(self.position["location"])
        restorable = self.arm.restorable_account(where, str(self.position["instance_id"]))
        if restorable is None or restorable.properties is None:
            raise TargetError(
                f"{self.label}: the source's continuous backup (instance {self.position['instance_id']} in "
                f"{where}) is gone: past its retention, or the account was deleted long ago"
            )
        props = restorable.properties
        now = utc_now()
        earliest = (
            parse_azure_time(props.oldest_restorable_time) or parse_azure_time(props.creation_time) or now
        )
        deleted = parse_azure_time(props.deletion_time)
        if deleted is not None:
            return earliest, deleted
        latest: datetime | None = None
        databases: Mapping[str, list[str]] = self.position.get("databases") or {}
        for database, containers in sorted(databases.items()):
            for container in containers:
                found = self.arm.latest_restorable(str(self.position["account"]), database, container, where)
                if found is not None and (latest is None or found < latest):
                    latest = found
        return earliest, latest or now

    # -- the restored account ---------------------------------------------------

    def _parameters(self) -> DatabaseAccountCreateUpdateParameters:
        databases = None
        if not self.position.get("whole_account"):
            recorded: Mapping[str, list[str]] = self.position.get("databases") or {}
            databases = [
                DatabaseRestoreResource(database_name=d, collection_names=list(c))
                for d, c in sorted(recorded.items())
            ]
        tier = self.position.get("backup_tier") or "Continuous7Days"
        return DatabaseAccountCreateUpdateParameters(
            location=self.location,
            kind=str(self.position.get("kind") or "GlobalDocumentDB"),
            tags={
                "txbackup-set": str(self.position.get("set_id") or ""),
                "txbackup-restore-point": iso_ms(self.at),
            },
            properties=DatabaseAccountCreateUpdateProperties(
                locations=[
                    Location(location_name=self.location, failover_priority=0, is_zone_redundant=False)
                ],
                create_mode="Restore",
                restore_parameters=RestoreParameters(
                    restore_mode="PointInTime",
                    restore_source=self.source,
                    restore_timestamp_in_utc=self.at,
                    databases_to_restore=databases,
                ),
                backup_policy=ContinuousModeBackupPolicy(
                    continuous_mode_properties=ContinuousModeProperties(tier=str(tier))
                ),
            ),
        )

    def _ours(self, account: DatabaseAccountGetResults) -> bool:
        """Whether ``account`` is this job's restore (same source and point)."""
        props = account.properties
        restore = props.restore_parameters if props is not None else None
        if props is None or restore is None or text(props.create_mode) != "Restore":
            return False
        moment = parse_azure_time(restore.restore_timestamp_in_utc)
        return (
            (text(restore.restore_source) or "").lower() == self.source.lower()
            and moment is not None
            and abs((moment - self.at).total_seconds()) < 0.001
        )

    def _attempt(self) -> int:
        attempt = 1
        while self.journal.is_done(f"failed/{attempt}"):
            attempt += 1
        return attempt

    def _online(self) -> None:
        if self.journal.is_done("online"):
            return
        attempt = self._attempt()
        step = f"requested/{attempt}"
        accounts = self.arm.client.database_accounts
        group = self.arm.resource_group
        poller: LROPoller[DatabaseAccountGetResults] | None = None
        if self.journal.is_done(step):
            token = str((self.journal.data(step) or {})["token"])
            poller = accounts.begin_create_or_update(
                group, self.name, self._parameters(), continuation_token=token
            )
        else:
            existing = self.arm.account(self.name)
            if existing is not None and not self._ours(existing):
                raise TargetError(
                    f"{self.label}: account {self.name} appeared meanwhile and is not this job's restore "
                    f"of {self.position['account']} at {iso_ms(self.at)}; it is left alone"
                )
            if existing is not None and _state(existing) == "Deleting":  # a deletion cut short
                self._watch(f"deletion of the failed account {self.name}", until_gone=True)
                existing = None
            if existing is not None and _state(existing) in FAILED_STATES:
                log.warning(
                    "%s: deleting account %s, this job's failed restore, to try again", self.label, self.name
                )
                deleting = self.arm.call(
                    f"delete the failed account {self.name}", accounts.begin_delete, group, self.name
                )
                self.arm.wait(
                    deleting, f"deletion of the failed account {self.name}", self.target.wait_timeout_s
                )
                existing = None
            if existing is None:
                log.info(
                    "%s: restoring account %s as %s at %s",
                    self.label,
                    self.position["account"],
                    self.name,
                    iso_ms(self.at),
                )
                poller = self.arm.call(
                    f"restore account {self.position['account']} as {self.name}",
                    accounts.begin_create_or_update,
                    group,
                    self.name,
                    self._parameters(),
                )
                self.done(step, {"token": poller.continuation_token(), "account": self.name})
        what = f"restore of account {self.position['account']} as {self.name}"
        try:
            if poller is not None:
                self.arm.wait(poller, what, self.target.wait_timeout_s)
            else:  # ours, asked for before a crash that lost the operation: watch the account itself
                self._watch(what)
        except AzureFailed as exc:
            self.done(f"failed/{attempt}", {"message": str(exc)})
            raise AzureFailed(
                f"{exc} [resuming the job deletes the failed account {self.name} and restores again]"
            ) from None
        except TimeoutError:
            raise TargetError(
                f"{self.label}: account {self.name} is not online after {self.target.wait_timeout_s:g}s; "
                "Azure goes on restoring it: resume the restore job to keep waiting"
            ) from None
        account = self.arm.account(self.name)
        if account is None or not self._ours(account) or _state(account) != SUCCEEDED:
            state = _state(account) if account is not None else "gone"
            raise TargetError(f"{self.label}: account {self.name} is {state} after its restore, not online")
        endpoint = text(account.properties.document_endpoint) if account.properties is not None else None
        self.done("online", {"account": self.name, "document_endpoint": endpoint})

    def _watch(self, what: str, *, until_gone: bool = False) -> None:
        """Poll the account itself until it is online (or gone, with ``until_gone``)."""
        deadline = time.monotonic() + self.target.wait_timeout_s
        while True:
            account = self.arm.account(self.name)
            state = _state(account) if account is not None else "gone"
            if state == ("gone" if until_gone else SUCCEEDED):
                return
            if not until_gone and (state in FAILED_STATES or account is None):
                raise AzureFailed(f"{self.label}: {what} failed in Azure: the account is {state}")
            if time.monotonic() >= deadline:
                raise TimeoutError(what)
            log.info("%s: %s: %s", self.label, what, state)
            self.poller.sleep()

    # -- Strong consistency --------------------------------------------------------

    def _strong(self) -> None:
        step = "consistency-strong"
        if self.journal.is_done(step):
            return
        account = self.arm.account(self.name)
        if account is None:
            raise TargetError(f"{self.label}: the restored account {self.name} is gone")
        if _consistency(account) != STRONG:
            log.info(
                "%s: account %s: default consistency %s -> Strong",
                self.label,
                self.name,
                _consistency(account),
            )
            update = DatabaseAccountUpdateParameters(
                properties=DatabaseAccountUpdateProperties(
                    consistency_policy=ConsistencyPolicy(default_consistency_level=STRONG)
                )
            )
            what = f"set the default consistency of account {self.name} to Strong"
            accounts = self.arm.client.database_accounts
            poller = self.arm.call(what, accounts.begin_update, self.arm.resource_group, self.name, update)
            try:
                self.arm.wait(poller, what, self.target.wait_timeout_s)
            except TimeoutError:
                raise TargetError(
                    f"{self.label}: {what}: not done after {self.target.wait_timeout_s:g}s"
                ) from None
            account = self.arm.account(self.name)
        level = _consistency(account) if account is not None else "gone"
        if level != STRONG:
            raise TargetError(
                f"{self.label}: the restored account {self.name} reads back default consistency {level} "
                "after it was set to Strong: ScalarDB's guarantees need Strong; do not point any application "
                f"at it until `az cosmosdb show --name {self.name} --resource-group "
                f"{self.arm.resource_group} --query consistencyPolicy` says Strong "
                "(resume the restore job to try again)"
            )
        self.done(step, {"consistency": STRONG})

    # -- what is left ------------------------------------------------------------------

    def _after(self) -> None:
        step = "after-restore"
        if self.journal.is_done(step):
            return
        online = self.journal.data("online") or {}
        endpoint = str(online.get("document_endpoint") or "")
        argv = self.target.after_restore
        if argv:
            env = {
                "TXBACKUP_COSMOS_ACCOUNT": self.name,
                "TXBACKUP_COSMOS_ENDPOINT": endpoint,
                "TXBACKUP_COSMOS_RESOURCE_GROUP": self.arm.resource_group,
                "TXBACKUP_COSMOS_SUBSCRIPTION": self.arm.subscription_id,
                "TXBACKUP_COSMOS_SOURCE_ACCOUNT": str(self.position["account"]),
                "TXBACKUP_RESTORE_POINT": iso_ms(self.at),
            }
            procs.run(
                argv,
                culprit=f"{self.label}: after_restore",
                env=env,
                timeout=self.target.after_restore_timeout_s,
            )
            self.done(step, {"command": list(argv)})
            log.info("%s: after_restore ran for account %s", self.label, self.name)
            return
        left = [
            "re-create ScalarDB's stored procedures (not restored by Cosmos DB): run the ScalarDB "
            "schema loader with --repair-all against the new account "
            f"(contact point {endpoint or self.name})",
            f"point the applications at account {self.name} (scalar.db.contact_points, and its keys: "
            f"az cosmosdb keys list --name {self.name} --resource-group {self.arm.resource_group})",
        ]
        self.done(step, {"left_to_do": left})
        log.warning(
            "%s: account %s restored to %s with Strong consistency; left to do: 1) %s; 2) %s",
            self.label,
            self.name,
            iso_ms(self.at),
            left[0],
            left[1],
        )
