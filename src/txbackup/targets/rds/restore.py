"""Restoring an RDS instance or Aurora cluster to the set's restore point, as a
resumable job on the shared point-in-time job (``pitr.job``).

RDS restores to a point only into a **new** identifier: nothing existing is
touched, and the applications (ScalarDB's ``scalar.db.contact_points``) must be
pointed at the new endpoint, which the job prints once the copy is available.
The steps, each recorded once it has taken effect and skipped on resume
(``txbackup restore --resume JOB``):

============================  ===============================================
``plan``                      the point inside the source's restorable window
                              (a point past but not yet restorable is waited
                              for, up to ``restore_window_wait``), the new
                              identifiers free; record them
``requested``                 (instance) RestoreDBInstanceToPointInTime with
                              ``RestoreTime`` = the point and the recorded
                              instance class, parameter and option groups,
                              subnet group, security groups and port
``available``                 (instance) the copy is available; its endpoint
``cluster-requested``         (Aurora) RestoreDBClusterToPointInTime with
                              ``RestoreToTime``, the recorded cluster parameter
                              group, subnet group, security groups and port
``cluster-available``         (Aurora) the cluster is available
``instance/ID/requested``     (Aurora) CreateDBInstance in the new cluster, one
                              per recorded instance, writer first, with its
                              class, parameter group and promotion tier
``instance/ID/available``     (Aurora) that instance is available
============================  ===============================================

Every copy is tagged with the set and the restore point: a step repeated after
a crash between acting and recording finds its copy by identifier and accepts
it only with those tags; an instance or cluster of that identifier that this
job did not make stops the job and is left alone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from txbackup.clock import iso_ms
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import StepJournal
from txbackup.targets.pitr.job import PointInTimeJob
from txbackup.targets.pitr.journal import FaultHook
from txbackup.targets.rds.aws import CLUSTER, INSTANCE, Rds, check_identifier, check_name, tags_of

log = logging.getLogger(__name__)

SET_TAG = "txbackup-set"
POINT_TAG = "txbackup-restore-point"


def member_identifier(new: str, index: int, culprit: str) -> str:
    """The identifier of the ``index``-th (from 1) instance of the restored cluster ``new``."""
    return check_identifier(f"{new}-{index}", culprit, "instance identifier (made from the new cluster's)")


class RestoreJob(PointInTimeJob):
    """One restore of one RDS target (see the module doc)."""

    def __init__(
        self,
        rds: Rds,
        journal: StepJournal,
        position: Mapping[str, Any],
        restore_point: str | None,
        new: str,
        window_wait_s: float,
        hook: FaultHook | None = None,
    ) -> None:
        super().__init__(rds.label, journal, restore_point, rds.poller, hook=hook)
        self.rds = rds
        self.kind = str(position.get("kind"))
        if self.kind not in (INSTANCE, CLUSTER):
            raise TargetError(
                f"{self.label}: the backup set records no instance or cluster (not an rds set?)"
            )
        self.record: Mapping[str, Any] = position.get(self.kind) or {}
        if not isinstance(self.record, Mapping) or not self.record.get("identifier"):
            raise TargetError(f"{self.label}: the backup set records no {self.kind}")
        self.source = str(self.record["identifier"])
        self.set_id = str(position.get("set_id") or "")
        self.new = new
        self.window_wait_s = window_wait_s

    def tags(self) -> list[dict[str, str]]:
        return [{"Key": SET_TAG, "Value": self.set_id}, {"Key": POINT_TAG, "Value": iso_ms(self.at)}]

    def _ours(self, desc: Mapping[str, Any]) -> bool:
        found = tags_of(desc)
        return found.get(SET_TAG) == self.set_id and found.get(POINT_TAG) == iso_ms(self.at)

    # -- the job ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Restore; returns the new copy's identifier and endpoints (also logged)."""
        planned = self.plan(self._check)
        self.new = str(planned["identifier"])  # the one this job started, whatever the pattern says now
        if self.kind == INSTANCE:
            self._instance()
            found = self.journal.data("available")
            endpoint = f"{found.get('endpoint')}:{found.get('port')}"
            restored: dict[str, Any] = {"instance": self.new, "endpoint": endpoint}
        else:
            members = [str(m) for m in planned.get("instances") or []]
            self._cluster(members)
            found = self.journal.data("cluster-available")
            endpoint = f"{found.get('endpoint')}:{found.get('port')}"
            restored = {
                "cluster": self.new,
                "instances": members,
                "endpoint": endpoint,
                "reader_endpoint": f"{found.get('reader_endpoint')}:{found.get('port')}",
            }
        log.warning(
            "%s: %s %s restored to %s as %s %s, endpoint %s: point the applications there "
            "(ScalarDB: scalar.db.contact_points); the source is untouched",
            self.label,
            self.kind,
            self.source,
            iso_ms(self.at),
            self.kind,
            self.new,
            endpoint,
        )
        return restored

    def _check(self) -> dict[str, Any]:
        if self.rds.describe(self.kind, self.source) is None:
            raise TargetError(
                f"{self.label}: the source {self.kind} {self.source} does not exist in {self.rds.where()}: "
                "restore from its retained automated backups by hand (aws rds "
                "describe-db-instance-automated-backups)"
            )
        self.check_window(
            f"{self.kind} {self.source}", lambda: self.rds.window(self.kind, self.source), self.window_wait_s
        )
        names = [self.new]
        members: list[str] = []
        if self.kind == CLUSTER:
            count = len(self.record.get("instances") or [])
            members = [member_identifier(self.new, i + 1, self.label) for i in range(count)]
            names += members
        for i, name in enumerate(names):
            kind = self.kind if i == 0 else INSTANCE
            if self.rds.describe(kind, name) is not None:
                raise TargetError(
                    f"{self.label}: {kind} {name} exists already; a restore never replaces one: "
                    f"name another with --to NAME=identifier (or delete it first)"
                )
        return {"identifier": self.new, "kind": self.kind, "source": self.source, "instances": members}

    def _existing(self, kind: str, identifier: str) -> bool:
        """Whether ``identifier`` exists already as this job's copy (a repeated step);
        refuses one the job did not make."""
        desc = self.rds.describe(kind, identifier)
        if desc is None:
            return False
        if not self._ours(desc):
            raise TargetError(
                f"{self.label}: {kind} {identifier} appeared meanwhile and is not this job's restore of "
                f"{self.source} at {iso_ms(self.at)}; it is left alone"
            )
        return True

    def _group(self, key: str) -> dict[str, Any]:
        """The recorded settings a restore request names (checked: the set is untrusted)."""
        params: dict[str, Any] = {}
        names = {
            "parameter_group": "DBClusterParameterGroupName"
            if self.kind == CLUSTER
            else "DBParameterGroupName",
            "subnet_group": "DBSubnetGroupName",
            "option_group": "OptionGroupName",
        }
        for field, param in names.items():
            if (field == "option_group" and self.kind == CLUSTER) or field not in self.record:
                continue
            value = self.record.get(field)
            if value:
                params[param] = check_name(value, self.label, field.replace("_", " "))
        groups = self.record.get("security_groups") or []
        if not isinstance(groups, list):
            raise TargetError(f"{self.label}: the backup set's security_groups is not a list")
        if groups:
            params["VpcSecurityGroupIds"] = [check_name(g, self.label, "security group") for g in groups]
        port = self.record.get("port")
        if port is not None:
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise TargetError(f"{self.label}: the backup set records port {port!r}, not a port")
            params["Port"] = port
        if key == INSTANCE:
            params["DBInstanceClass"] = check_name(
                self.record.get("instance_class"), self.label, "instance class"
            )
            params["MultiAZ"] = bool(self.record.get("multi_az"))
            params["PubliclyAccessible"] = bool(self.record.get("publicly_accessible"))
        return params

    # -- an instance -------------------------------------------------------------------

    def _instance(self) -> None:
        def request() -> dict[str, Any]:
            if not self._existing(INSTANCE, self.new):
                self.rds.call(
                    "restore_db_instance_to_point_in_time",
                    f"instance {self.source}",
                    SourceDBInstanceIdentifier=self.source,
                    TargetDBInstanceIdentifier=self.new,
                    RestoreTime=self.at,
                    Tags=self.tags(),
                    **self._group(INSTANCE),
                )
            return {"instance": self.new}

        self.step("requested", request)
        self.step("available", lambda: self._endpoint(INSTANCE, self.new))

    def _endpoint(self, kind: str, identifier: str) -> dict[str, Any]:
        desc = self.rds.wait_available(kind, identifier)
        if kind == INSTANCE:
            endpoint = desc.get("Endpoint") or {}
            return {kind: identifier, "endpoint": endpoint.get("Address"), "port": endpoint.get("Port")}
        return {
            kind: identifier,
            "endpoint": desc.get("Endpoint"),
            "reader_endpoint": desc.get("ReaderEndpoint"),
            "port": desc.get("Port"),
        }

    # -- an Aurora cluster, then its instances ---------------------------------------------

    def _cluster(self, members: list[str]) -> None:
        recorded = self.record.get("instances") or []
        if not isinstance(recorded, list) or len(recorded) != len(members):
            raise UsageError(f"{self.label}: the backup set's instances do not match this job's plan")

        def request() -> dict[str, Any]:
            if not self._existing(CLUSTER, self.new):
                self.rds.call(
                    "restore_db_cluster_to_point_in_time",
                    f"cluster {self.source}",
                    SourceDBClusterIdentifier=self.source,
                    DBClusterIdentifier=self.new,
                    RestoreType="full-copy",
                    RestoreToTime=self.at,
                    Tags=self.tags(),
                    **self._group(CLUSTER),
                )
            return {"cluster": self.new}

        self.step("cluster-requested", request)
        self.step("cluster-available", lambda: self._endpoint(CLUSTER, self.new))
        engine = check_name(self.record.get("engine"), self.label, "engine")
        for member, new in zip(recorded, members, strict=True):
            if not isinstance(member, Mapping):
                raise TargetError(f"{self.label}: the backup set's instances hold a {type(member).__name__}")
            self.step(f"instance/{new}/requested", functools.partial(self._member, member, new, engine))
            self.step(f"instance/{new}/available", functools.partial(self._endpoint, INSTANCE, new))

    def _member(self, member: Mapping[str, Any], new: str, engine: str) -> dict[str, Any]:
        if not self._existing(INSTANCE, new):
            params: dict[str, Any] = {
                "DBInstanceIdentifier": new,
                "DBClusterIdentifier": self.new,
                "Engine": engine,
                "DBInstanceClass": check_name(member.get("instance_class"), self.label, "instance class"),
                "Tags": self.tags(),
            }
            if member.get("parameter_group"):
                params["DBParameterGroupName"] = check_name(
                    member.get("parameter_group"), self.label, "parameter group"
                )
            tier = member.get("promotion_tier")
            if isinstance(tier, int) and not isinstance(tier, bool) and 0 <= tier <= 15:
                params["PromotionTier"] = tier
            self.rds.call("create_db_instance", f"instance {new}", **params)
        return {"instance": new, "source": str(member.get("identifier") or "")}
