"""Restoring an Azure Database flexible server to the set's restore point, as a
resumable job on the shared point-in-time job (``pitr.job``).

A flexible server restores to a point only into a **new** server. The steps,
each recorded once it has taken effect and skipped on resume:

=============  ==================================================================
``plan``       the point inside the window (not before the source's
               ``earliestRestoreDate``, not after now), the new name free; record it
``requested``  PUT the new server: ``createMode = "PointInTimeRestore"``,
               ``sourceServerResourceId``, the point (PostgreSQL ``pointInTimeUTC``,
               MySQL ``restorePointInTime``), the recorded location, SKU and network,
               tagged with the set and the point
``ready``      the new server is Ready; its host name (the new endpoint)
=============  ==================================================================

A server of the new name found when the request is repeated after a crash is
accepted only with this job's tags; anyone else's is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from txbackup.clock import iso_ms, utc_now
from txbackup.errors import TargetError
from txbackup.jobs import StepJournal
from txbackup.targets.azuredb.arm import FlexArm, parse_time
from txbackup.targets.pitr.job import PointInTimeJob
from txbackup.targets.pitr.journal import FaultHook
from txbackup.targets.pitr.polling import Poller

log = logging.getLogger(__name__)

SET_TAG = "txbackup-set"
POINT_TAG = "txbackup-restore-point"
READY = "Ready"
FAILED_STATES = frozenset({"Dropping", "Disabled"})


def earliest_of(server: Mapping[str, Any]) -> datetime | None:
    backup = (server.get("properties") or {}).get("backup") or {}
    return parse_time(backup.get("earliestRestoreDate"))


class RestoreJob(PointInTimeJob):
    """One restore of one flexible-server target (see the module doc)."""

    def __init__(
        self,
        arm: FlexArm,
        poller: Poller,
        journal: StepJournal,
        position: Mapping[str, Any],
        restore_point: str | None,
        new: str,
        hook: FaultHook | None = None,
    ) -> None:
        super().__init__(arm.label, journal, restore_point, poller, hook=hook)
        self.arm = arm
        self.flavor = arm.flavor
        self.record = dict(position)
        self.source = str(self.record.get("server") or "")
        if not self.source or not self.record.get("id"):
            raise TargetError(
                f"{self.label}: the backup set records no server (not an {self.flavor.kind} set?)"
            )
        self.set_id = str(self.record.get("set_id") or "")
        self.new = new

    def run(self) -> dict[str, Any]:
        planned = self.plan(self._check)
        self.new = str(planned["server"])  # the one this job started, whatever the pattern says now
        self.step("requested", self._request)
        ready = self.step("ready", self._ready)
        endpoint = str(ready.get("fqdn") or "")
        log.warning(
            "%s: server %s restored to %s as server %s, endpoint %s: point the applications there "
            "(ScalarDB: scalar.db.contact_points); the source is untouched",
            self.label,
            self.source,
            iso_ms(self.at),
            self.new,
            endpoint,
        )
        return {"server": self.new, "endpoint": endpoint}

    def _window(self) -> tuple[datetime, datetime]:
        """The source's window: its earliest restore date .. now (a flexible server's
        logs are backed up continuously; Azure states no latest restorable time)."""
        server = self.arm.server(self.source)
        if server is None:
            raise TargetError(
                f"{self.label}: the source server {self.source} does not exist in {self.arm.where()}: "
                "a deleted server can only be revived by Azure support or within its grace period"
            )
        now = utc_now()
        return earliest_of(server) or now, now

    def _check(self) -> dict[str, Any]:
        self.check_window(f"server {self.source}", self._window, 0.0)
        if self.arm.server(self.new) is not None:
            raise TargetError(
                f"{self.label}: server {self.new} exists already; a restore never replaces a server: "
                "name another with --to NAME=servername (or delete it first)"
            )
        return {"server": self.new, "source": self.source}

    def body(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "createMode": "PointInTimeRestore",
            "sourceServerResourceId": str(self.record["id"]),
            self.flavor.time_field: iso_ms(self.at),
        }
        network = self.record.get("network")
        if isinstance(network, Mapping) and network:
            properties["network"] = dict(network)
        zone = self.record.get("availability_zone")
        if isinstance(zone, str) and zone:
            properties["availabilityZone"] = zone
        body: dict[str, Any] = {
            "location": str(self.record.get("location") or ""),
            "tags": {SET_TAG: self.set_id, POINT_TAG: iso_ms(self.at)},
            "properties": properties,
        }
        sku = self.record.get("sku")
        if isinstance(sku, Mapping) and sku.get("name"):
            body["sku"] = {k: str(v) for k, v in sku.items() if k in ("name", "tier")}
        return body

    def _ours(self, server: Mapping[str, Any]) -> bool:
        tags = server.get("tags") or {}
        return (
            isinstance(tags, Mapping)
            and tags.get(SET_TAG) == self.set_id
            and tags.get(POINT_TAG) == iso_ms(self.at)
        )

    def _request(self) -> dict[str, Any]:
        existing = self.arm.server(self.new)
        if existing is not None:
            if not self._ours(existing):
                raise TargetError(
                    f"{self.label}: server {self.new} appeared meanwhile and is not this job's restore of "
                    f"{self.source} at {iso_ms(self.at)}; it is left alone"
                )
            return {"server": self.new, "operation": None}
        log.info("%s: restoring server %s as %s at %s", self.label, self.source, self.new, iso_ms(self.at))
        operation = self.arm.create(self.new, self.body())
        # the status URL is followed with our token: only on the management endpoint itself
        if operation is not None and not operation.startswith(self.arm.endpoint + "/"):
            operation = None
        return {"server": self.new, "operation": operation}

    def _ready(self) -> dict[str, Any]:
        operation = self.journal.data("requested").get("operation")
        found: dict[str, Any] = {}

        def probe() -> tuple[bool, str]:
            server = self.arm.server(self.new)
            if server is None:
                if isinstance(operation, str) and operation:
                    status, said = self.arm.operation(operation)
                    if status in ("Failed", "Canceled"):
                        raise TargetError(
                            f"{self.label}: the restore as server {self.new} failed in Azure: "
                            f"{said or status}"
                        )
                return False, "not created yet"
            state = str((server.get("properties") or {}).get("state") or "unknown")
            if state in FAILED_STATES:
                raise TargetError(f"{self.label}: server {self.new} is {state}: it will not become Ready")
            found.update(server)
            return state == READY, state

        self.poller.wait(f"server {self.new} to be Ready", probe)
        fqdn = str((found.get("properties") or {}).get("fullyQualifiedDomainName") or "")
        return {"server": self.new, "fqdn": fqdn}
