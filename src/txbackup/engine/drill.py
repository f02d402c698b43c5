"""A restore drill: restore a set into scratch places, prove it, time it, clean up.

Steps (each reported; a failure names its step, target and cause):

1. places: every target's drill place (``[drill.targets.NAME]``, read like
   ``[restore.NAME]``) is resolved and compared with every target's own place (same
   server and database, or same SQLite file): a drill never overwrites production, so an
   equal place is refused before anything is read (:func:`resolve_places`).
2. restore: the whole set through ``engine.restore`` (the stat check of the set, then
   each target, verified as it streams), with
   ``force``: drill places are reused from one run to the next. The seconds of each
   target and the total (verification included: it is part of any real restore) are the
   recovery time people put in their runbooks.
3. audit: ``engine.audit.audit_live`` reads the drill places (the targets as restored,
   ``target.placed(dest)``) at ScalarDB's level.
4. checks: ``[[drill.checks]]`` queries and their expected answers; then ``command``, an
   argv run without a shell, with the places in its environment (never in argv), its
   output kept bounded.
5. cleanup: the drill databases dropped / files removed, unless ``keep``; a failure to
   clean up fails the drill too (a forgotten copy of production data is a leak).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from txbackup.engine.audit import SYSTEM_NAMESPACE, AuditOptions, audit_live
from txbackup.engine.manifest import Manifest
from txbackup.engine.progress import Reporter, SilentReporter
from txbackup.engine.restore import RestorePlan, describe_destination, given_destination, restore_set
from txbackup.errors import TxbackupError, UsageError
from txbackup.jobs import JobStore
from txbackup.repository.crypto import Keyring
from txbackup.secrets import REDACTED, resolve_secret
from txbackup.storage.base import Storage
from txbackup.targets import drill_places
from txbackup.targets.base import Drillable, Target
from txbackup.targets.sql.restore_points import RESTORE_POINT

OUTPUT_BYTES = 4096
"""The end of a command's output kept in the result (a drill runs unattended: bounded)."""

ENV_PREFIX = "TXBACKUP_DRILL"


@dataclass
class Place:
    """A target and its drill place."""

    source: Target  # as configured (production)
    place: Any  # the same target as restored into the drill place (``placed``; read by kind)
    location: dict[str, str]  # [drill.targets.NAME] without password and rename
    credentials: dict[str, str]  # where the drill place's password is
    renames: dict[str, str]

    def describe(self) -> str:
        return _describe(self.location, self.renames)


def _describe(location: Mapping[str, str], renames: Mapping[str, str]) -> str:
    """A drill place as the user wrote it: the DSN alone when only that is given."""
    given: str | Mapping[str, str] | None = location or None
    if set(location) == {"dsn"}:
        given = location["dsn"]
    return describe_destination(given, renames or None)


def resolve_places(targets: Sequence[Target], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Place]:
    """Every target's drill place, checked (UsageError naming the target): a kind a drill
    can restore, a place given, different from every target's own place and from the
    other drill places. Reads passwords (of the drill places), contacts nothing."""
    production: dict[tuple[str, ...], str] = {}
    for target in targets:
        if target.kind not in drill_places.KINDS or not isinstance(target, Drillable):
            raise UsageError(
                f"drill: target {target.name} ({target.kind}): a drill restores postgres, mysql and sqlite"
                " targets only"
            )
        if target.describe().get("mode") == RESTORE_POINT:  # its sets hold no data to restore
            raise UsageError(
                f'drill: target {target.name} ({target.kind}) is in mode = "{RESTORE_POINT}": its sets'
                " hold no data a drill could restore; drill your own recovery of its point instead"
            )
        for key in target.places():
            production[key] = target.name
    found: dict[str, Place] = {}
    taken: dict[tuple[str, ...], str] = {}
    for target in targets:
        section = sections.get(target.name)
        if section is None:
            raise UsageError(
                f"drill: target {target.name} has no drill place: add [drill.targets.{target.name}] to the"
                " cluster file (a drill never restores into a target's own databases)"
            )
        location = {k: v for k, v in section.items() if k not in ("password", "rename")}
        credentials = dict(section.get("password") or {})
        renames = dict(section.get("rename") or {})
        dest = given_destination(location, renames) or {}
        password = resolve_secret(credentials, culprit=f"drill place of {target.name}")
        if password is not None:
            dest["password"] = password
        assert isinstance(target, Drillable)  # checked above
        place = target.placed(dest)
        for key in place.places():
            owner = production.get(key)
            if owner is not None:
                what = "its own" if owner == target.name else f"target {owner}'s"
                raise UsageError(
                    f"drill: target {target.name}: the drill place {_describe(location, renames)}"
                    f" is {what} production place ({_key_text(key)}): refused, a drill never overwrites"
                    " production"
                )
            other = taken.get(key)
            if other is not None:
                raise UsageError(
                    f"drill: targets {other} and {target.name} have the same drill place ({_key_text(key)})"
                )
            taken[key] = target.name
        found[target.name] = Place(target, place, location, credentials, renames)
    return found


def _key_text(key: tuple[str, ...]) -> str:
    if key[0] == "sqlite":
        return key[1]
    return f"{key[0]} {key[1]}:{key[2]} database {key[3]}"


@dataclass
class Failure:
    step: str
    target: str
    cause: str

    def line(self) -> str:
        where = f", target {self.target}" if self.target else ""
        return f"drill failed: step {self.step}{where}: {self.cause}"


@dataclass
class DrillResult:
    set_id: str
    restore_point: str | None
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    verify_seconds: float | None = None
    total_seconds: float | None = None
    job_id: str | None = None
    audit: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    command: dict[str, Any] | None = None
    cleanup: dict[str, Any] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "set_id": self.set_id,
            "restore_point": self.restore_point,
            "ok": self.ok,
            "restore": {
                "job_id": self.job_id,
                "verify_seconds": self.verify_seconds,
                "total_seconds": self.total_seconds,
                "targets": self.targets,
            },
            "audit": self.audit,
            "checks": self.checks,
            "command": self.command,
            "cleanup": self.cleanup,
            "failures": [f.__dict__ for f in self.failures],
        }


@dataclass
class DrillPlan:
    storage: Storage
    manifest: Manifest
    places: Mapping[str, Place]  # from resolve_places
    jobs: JobStore
    checks: Sequence[Mapping[str, Any]] = ()
    command: Sequence[str] = ()
    timeout_s: float = 600.0
    audit: bool = True
    audit_options: AuditOptions = field(default_factory=AuditOptions)
    system_namespace: str = SYSTEM_NAMESPACE
    keep: bool = False
    reporter: Reporter = field(default_factory=SilentReporter)
    keyring: Keyring | None = None


class _Timing:
    """Passes restore events on, keeping each target's seconds and the verification's."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.ms: dict[str, int] = {}
        self.verify_started: float | None = None
        self.verify_s: float | None = None

    def event(self, kind: str, /, **fields: Any) -> None:
        if kind == "phase" and fields.get("name") == "verify":
            self.verify_started = time.monotonic()
        if kind == "phase" and fields.get("name") == "restore" and self.verify_started is not None:
            self.verify_s = time.monotonic() - self.verify_started
        if kind == "target" and fields.get("phase") == "restored":
            self.ms[str(fields["name"])] = int(fields["ms"])
        self.inner.event(kind, **fields)

    def bytes_done(self, target: str, count: int) -> None:
        self.inner.bytes_done(target, count)


def run_drill(plan: DrillPlan) -> DrillResult:
    """Restore, audit, check, clean up; every failure is in the result (never raised, so the
    clean-up always runs and the report is complete)."""
    manifest = plan.manifest
    result = DrillResult(manifest.set_id, manifest.restore_point)
    names = [t.name for t in manifest.targets]
    places = {name: plan.places[name] for name in names if name in plan.places}
    try:
        if _restore(plan, places, result):
            if plan.audit:
                _audit(plan, places, result)
            for check in plan.checks:
                _check(plan, places, check, result)
            if plan.command:
                _command(plan, places, result)
    finally:
        _cleanup(plan, places, result)
    return result


def _restore(plan: DrillPlan, places: Mapping[str, Place], result: DrillResult) -> bool:
    report = plan.reporter
    missing = [r.name for r in plan.manifest.targets if r.name not in places]
    if missing:
        result.failures.append(Failure("restore", missing[0], "in the set but not in the cluster file"))
        return False
    timing = _Timing(report)
    restore = RestorePlan(
        storage=plan.storage,
        manifest=plan.manifest,
        targets=[p.source for p in places.values()],
        jobs=plan.jobs,
        destinations={n: p.location for n, p in places.items() if p.location},
        credentials={n: p.credentials for n, p in places.items() if p.credentials},
        renames={n: p.renames for n, p in places.items() if p.renames},
        force=True,  # only drill places (checked by resolve_places): reused from run to run
        reporter=timing,
        keyring=plan.keyring,
    )
    started = time.monotonic()
    try:
        job_id, _ = restore_set(restore)
    except Exception as exc:  # a scheduled drill reports any cause in one line, then cleans up
        text = str(exc) if isinstance(exc, TxbackupError) else f"{type(exc).__name__}: {exc}"
        # the drill cleans its places up: a --resume hint would point at nothing
        text = re.sub(r" \(restore job \S+: resume with --resume \S+\)$", "", text)
        failed = next((n for n in places if n not in timing.ms and f"target {n} " in text), "")
        result.failures.append(Failure("restore", failed, text))
        return False
    finally:
        result.verify_seconds = None if timing.verify_s is None else round(timing.verify_s, 3)
        for name, place in places.items():
            ms = timing.ms.get(name)
            result.targets[name] = {
                "kind": place.source.kind,
                "destination": place.describe(),
                "restore_seconds": None if ms is None else ms / 1000,
            }
    result.total_seconds = round(time.monotonic() - started, 3)
    result.job_id = job_id
    report.event("phase", name="restored", seconds=result.total_seconds)
    return True


def _audit(plan: DrillPlan, places: Mapping[str, Place], result: DrillResult) -> None:
    plan.reporter.event("phase", name="audit")
    try:
        report = audit_live(
            [p.place for p in places.values()], plan.audit_options, plan.system_namespace, plan.reporter
        )
    except TxbackupError as exc:
        result.audit = {"clean": False, "error": str(exc)}
        result.failures.append(Failure("audit", "", str(exc)))
        return
    result.audit = {
        "clean": report.clean,
        "records": report.records,
        "coordinator_rows": report.coordinator_rows,
        "findings": len(report.findings),
        "counts": report.counts(),
        "not_audited": list(report.not_audited),
        "first_findings": [f.line() for f in report.findings[:10]],
    }
    if not report.clean:
        counts = ", ".join(f"{n} {check}" for check, n in sorted(report.counts().items()))
        first = report.findings[0].line() if report.findings else (report.not_audited or [""])[0]
        cause = f"the restored set is NOT clean ({counts or 'targets not audited'}): {first}"
        result.failures.append(Failure("audit", "", cause))


def _answer_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _check(
    plan: DrillPlan, places: Mapping[str, Place], check: Mapping[str, Any], result: DrillResult
) -> None:
    name, target = str(check["name"]), str(check["target"])
    plan.reporter.event("target", name=target, phase="check", check=name)
    entry: dict[str, Any] = {"name": name, "target": target, "passed": False}
    result.checks.append(entry)
    place = places.get(target)
    if place is None:
        entry["error"] = f"set {plan.manifest.set_id} has no target {target}"
        result.failures.append(Failure("check", target, f"{name}: {entry['error']}"))
        return
    try:
        value = drill_places.query(
            place.place, place.source, check["database"], check["sql"], plan.timeout_s, f"check {name}"
        )
    except TxbackupError as exc:
        entry["error"] = str(exc)
        result.failures.append(Failure("check", target, str(exc)))
        return
    answer = _answer_text(value)
    entry["answer"] = answer[:200]
    if check["expect"] is not None:
        entry["expect"] = check["expect"]
        entry["passed"] = answer == check["expect"]
    elif check["expect_nonzero"]:
        entry["expect"] = "nonzero"
        try:
            entry["passed"] = float(answer) != 0
        except ValueError:
            entry["passed"] = False
    else:
        entry["passed"] = True  # no expectation: the query must run
    if not entry["passed"]:
        result.failures.append(
            Failure("check", target, f"check {name}: answered {answer[:80]!r}, expected {entry['expect']!r}")
        )


def _env_name(target: str) -> str:
    return f"{ENV_PREFIX}_" + re.sub(r"[^A-Za-z0-9]", "_", target).upper()


def _command(plan: DrillPlan, places: Mapping[str, Place], result: DrillResult) -> None:
    argv = list(plan.command)
    plan.reporter.event("phase", name="command", program=argv[0])
    env = dict(os.environ)
    env[f"{ENV_PREFIX}_SET"] = plan.manifest.set_id
    env[f"{ENV_PREFIX}_TARGETS"] = " ".join(places)
    secrets = []
    for name, place in places.items():
        more = drill_places.environment(place.place, _env_name(name))
        secrets += [v for k, v in more.items() if k.endswith("_PASSWORD") and v]
        env.update(more)
    entry: dict[str, Any] = {"program": argv[0], "exit_code": None}
    result.command = entry
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:  # a file, not a pipe: a chatty command never blocks
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # its own process group: a timeout ends all of it
            )  # fmt: skip
        except OSError as exc:
            cause = f"command {argv[0]}: cannot run: {exc.strerror}"
            entry["error"] = cause
            result.failures.append(Failure("command", "", cause))
            return
        try:
            code = proc.wait(timeout=plan.timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.returncode is None:  # timed out, or the drill itself interrupted
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        entry["seconds"] = round(time.monotonic() - started, 3)
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_BYTES))
        text = out.read().decode("utf-8", "replace")
    for secret in secrets:  # a command printing its environment must not put a password in a report
        text = text.replace(secret, REDACTED)
    entry["output"] = text
    entry["output_truncated"] = size > OUTPUT_BYTES
    entry["exit_code"] = code
    if code != 0:
        why = f"timed out after {plan.timeout_s:g} s" if code is None else f"exited with {code}"
        last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
        cause = f"command {argv[0]} {why}" + (f": {last[:200]}" if last else "")
        result.failures.append(Failure("command", "", cause))


def _cleanup(plan: DrillPlan, places: Mapping[str, Place], result: DrillResult) -> None:
    result.cleanup = {"kept": plan.keep, "targets": {}}
    if plan.keep:
        return
    plan.reporter.event("phase", name="cleanup")
    for name, place in places.items():
        entry: dict[str, Any] = {"removed": []}
        result.cleanup["targets"][name] = entry
        try:
            entry["removed"] = drill_places.drop(place.place)
        except TxbackupError as exc:
            entry["error"] = str(exc)
            result.failures.append(Failure("cleanup", name, f"{exc} (drop it by hand)"))
            continue
        plan.reporter.event("target", name=name, phase="cleaned", removed=len(entry["removed"]))
