"""Metrics of one command run (backup, verify, forget, prune), written when it ends, however.

    with recorded("backup", args, reporter) as run:
        config = load_cluster(args.config)
        run.configure(config.metrics)           # the [metrics] table (--metrics-file wins)
        run.expect_targets(config.targets)
        reporter = run.reporter                 # tees the engine's events into the metrics
        ...
        run.summary = summary(manifest, ...)    # what a successful backup made
        run.returned = code                     # a command that answers non-zero without raising

The exit code is the one ``txbackup`` will exit with (0, 1, 2 for bad input, 130/143 for a
signal): the run's exception is looked at, recorded, and raised again unchanged. Writing or
pushing the metrics never changes that outcome: a failure there is a warning.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from txbackup.cli import Terminated
from txbackup.config import MetricsConfig
from txbackup.engine.progress import Reporter, SilentReporter
from txbackup.errors import TxbackupError
from txbackup.metrics import Family, MetricsError, check_textfile, push, read_gauge, render, write_textfile

LAST_SUCCESS = "txbackup_last_success_timestamp_seconds"

EXIT_CODES_HELP = "0 ok, 1 failed, 2 bad input, 130 SIGINT, 143 SIGTERM"


def add_metrics_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-file", metavar="PATH",
        help="write this run's Prometheus metrics to PATH (NAME.prom, for node-exporter's textfile "
        "collector; atomically, mode 0644), whatever the outcome (default: [metrics] textfile)",
    )  # fmt: skip


def exit_code_of(exc: BaseException | None) -> int:
    """The code ``txbackup`` exits with for this exception (see ``txbackup.cli.main``)."""
    if exc is None:
        return 0
    if isinstance(exc, TxbackupError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, Terminated):
        return 128 + signal.SIGTERM
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    return 1


class Named(Protocol):
    """A target as the metrics see it (``txbackup.targets.base.Target`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


@dataclass
class _TargetSeen:
    kind: str
    capture_s: float | None = None
    export_s: float | None = None
    bytes: int | None = None


class _Recording:
    """A reporter that passes every event on and keeps what the metrics need."""

    def __init__(self, run: Run, inner: Reporter) -> None:
        self._run = run
        self._inner = inner

    def event(self, kind: str, /, **fields: Any) -> None:
        self._run.seen(kind, fields)
        self._inner.event(kind, **fields)

    def bytes_done(self, target: str, count: int) -> None:
        self._inner.bytes_done(target, count)


@dataclass
class Run:
    command: str
    started: float
    inner: Reporter
    metrics_file: str | None = None
    config: MetricsConfig = field(default_factory=MetricsConfig)
    summary: dict[str, Any] | None = None
    returned: int = 0
    """What the command returns when it ends without an exception (verify: 1 on problems)."""
    exit_code: int | None = None
    targets: dict[str, _TargetSeen] = field(default_factory=dict)
    pause_ms: int | None = None
    phase_ms: dict[str, int] = field(default_factory=dict)
    warn: Callable[[str], None] = field(default=lambda message: _stderr_warning(message))
    emitted: bool = False

    @property
    def reporter(self) -> Reporter:
        return _Recording(self, self.inner)

    def configure(self, config: MetricsConfig) -> None:
        """The cluster file's ``[metrics]`` (read by now); ``--metrics-file`` wins over its textfile."""
        self.config = config

    def expect_targets(self, targets: Sequence[Named]) -> None:
        """The targets of the run: each gets a status, also those a failure never reached."""
        for target in targets:
            self.targets.setdefault(target.name, _TargetSeen(target.kind))

    def seen(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "target" and isinstance(fields.get("name"), str):
            seen = self.targets.setdefault(fields["name"], _TargetSeen(""))
            ms = fields.get("ms")
            seconds = ms / 1000 if isinstance(ms, int) else None
            if fields.get("phase") == "captured":
                seen.capture_s = seconds
            elif fields.get("phase") == "exported":
                seen.export_s = seconds
                if isinstance(fields.get("bytes"), int):
                    seen.bytes = fields["bytes"]
        elif kind == "phase" and fields.get("name") == "unpaused" and isinstance(fields.get("pause_ms"), int):
            self.pause_ms = fields["pause_ms"]
        elif kind == "phase" and fields.get("name") == "capture" and isinstance(fields.get("drain_ms"), int):
            self.phase_ms["drain"] = fields["drain_ms"]

    @property
    def textfile(self) -> str | None:
        """``--metrics-file``, else ``[metrics] textfile`` for a backup and, for the other
        commands, a file beside it named for the command (``txbackup.prom`` ->
        ``txbackup-verify.prom``): each command owns its file, so a verify never erases
        what the backup wrote, and node-exporter reads them all."""
        if self.metrics_file is not None or self.config.textfile is None:
            return self.metrics_file
        if self.command == "backup":
            return self.config.textfile
        path = Path(self.config.textfile)
        return str(path.with_name(f"{path.stem}-{self.command}{path.suffix}"))

    # -- the families -------------------------------------------------------------------------
    def families(self, ended: float, last_success: float | None) -> list[Family]:
        command = {"command": self.command}
        code = self.exit_code if self.exit_code is not None else 1
        families = [
            Family("txbackup_last_run_timestamp_seconds", "when the last run ended (Unix time)")
            .add(ended, **command),
            Family("txbackup_last_run_duration_seconds", "how long the last run took")
            .add(round(ended - self.started, 3), **command),
            Family("txbackup_last_run_exit_code", f"the last run's exit code ({EXIT_CODES_HELP})")
            .add(code, **command),
            Family("txbackup_last_run_success", "1 if the last run succeeded, else 0")
            .add(1 if code == 0 else 0, **command),
        ]  # fmt: skip
        if last_success is not None:
            success = Family(LAST_SUCCESS, "when the last successful run ended (Unix time)")
            families.append(success.add(last_success, **command))
        if self.command == "backup":
            families += self._backup_families()
        return families

    def _backup_families(self) -> list[Family]:
        done = self.summary or {}
        timings = done.get("timings") or {}
        pause_ms = timings.get("pause_ms", self.pause_ms)
        drain_ms = timings.get("drain_ms", self.phase_ms.get("drain"))
        per_target = done.get("targets") or {}
        families = []
        for name, help_text, ms in (
            ("pause", "the last backup's pause window (applications paused)", pause_ms),
            ("drain", "the last backup's pausing (in-flight work finishing)", drain_ms),
            ("capture", "the last backup's capture of all targets, in the pause", timings.get("capture_ms")),
            ("export", "the last backup's export of every target, after the pause", timings.get("export_ms")),
        ):
            family = Family(f"txbackup_backup_{name}_seconds", help_text)
            if isinstance(ms, int):
                family.add(ms / 1000)
            families.append(family)
        if per_target:
            families.append(
                Family("txbackup_backup_bytes", "bytes of the last complete backup set (before compression)")
                .add(sum(int(t["bytes"]) for t in per_target.values()))
            )
            families.append(
                Family("txbackup_backup_stored_bytes", "bytes the last complete backup set takes in storage")
                .add(sum(int(t["stored_bytes"]) for t in per_target.values()))
            )
        success = Family("txbackup_target_success", "1 if the last run captured and exported the target")
        size = Family("txbackup_target_bytes", "bytes exported from the target in the last run")
        stored = Family("txbackup_target_stored_bytes", "bytes the target's artifacts take in storage")
        capture = Family("txbackup_target_capture_seconds", "the target's capture, inside the pause")
        export = Family("txbackup_target_export_seconds", "the target's export, after the pause")
        for name, seen in sorted(self.targets.items()):
            final = per_target.get(name)
            kind = str(final["kind"]) if final else seen.kind
            labels = {"target": name, "kind": kind}
            exported = final is not None or seen.export_s is not None
            success.add(1 if exported else 0, **labels)
            count = final["bytes"] if final else seen.bytes
            if count is not None:
                size.add(int(count), **labels)
            if final:
                stored.add(int(final["stored_bytes"]), **labels)
            if seen.capture_s is not None:
                capture.add(seen.capture_s, **labels)
            if seen.export_s is not None:
                export.add(seen.export_s, **labels)
        return [*families, success, size, stored, capture, export]

    def succeeded(self) -> None:
        """The run succeeded: its metrics go out now, before the command prints its result
        (with --json the result stays the last event; a warning of ours comes before it)."""
        self.exit_code = 0
        self.emit(self.warn)

    # -- where they go ------------------------------------------------------------------------
    def emit(self, warn: Callable[[str], None]) -> None:
        if self.emitted:
            return
        self.emitted = True
        ended = time.time()
        succeeded = self.exit_code == 0
        textfile = self.textfile
        if textfile is not None:
            path = Path(textfile)
            last = ended if succeeded else read_gauge(path, LAST_SUCCESS, [("command", self.command)])
            try:
                write_textfile(path, render(self.families(ended, last)))
            except MetricsError as exc:
                warn(f"metrics not written: {exc}")
        if self.config.pushgateway is not None:
            # after a failure the gateway keeps the last success an earlier push gave it
            text = render(self.families(ended, ended if succeeded else None))
            try:
                push(
                    self.config.pushgateway,
                    self.config.job,
                    [("command", self.command)],
                    text,
                    replace=succeeded,
                    timeout=self.config.timeout_s,
                )
            except MetricsError as exc:
                warn(f"metrics not pushed: {exc}")


def _stderr_warning(message: str) -> None:
    print(f"txbackup: warning: {message}", file=sys.stderr)


def run_recorded(
    command: str, args: argparse.Namespace, body: Callable[[argparse.Namespace, Run], int]
) -> int:
    """``body(args, run)`` inside :func:`recorded`: what it returns is the run's exit code."""
    with recorded(command, args) as run:
        run.returned = body(args, run)
        return run.returned


@contextmanager
def recorded(command: str, args: argparse.Namespace, inner: Reporter | None = None) -> Iterator[Run]:
    """Record the run of ``command``; its metrics go out when the block ends, however it ends.

    A bad ``--metrics-file`` is refused before anything runs (exit 2, and no metrics: there
    is nowhere to write them)."""
    metrics_file = getattr(args, "metrics_file", None)
    if metrics_file is not None:
        check_textfile(metrics_file, what="--metrics-file")
    run = Run(command, time.time(), inner or SilentReporter(), metrics_file=metrics_file)
    if inner is not None and not isinstance(inner, SilentReporter):
        reporter = inner

        def warn(message: str) -> None:
            reporter.event("warning", message=message)

        run.warn = warn
    try:
        yield run
    except BaseException as exc:
        if not run.emitted:
            run.exit_code = exit_code_of(exc)
        run.emit(run.warn)
        raise
    if not run.emitted:
        run.exit_code = run.returned
    run.emit(run.warn)

