"""Prometheus metrics of a run: the text exposition format, a node-exporter textfile, a Pushgateway.

Written here rather than with ``prometheus_client``: what a run exports is a dozen gauges
written once at its end, the text format (version 0.0.4) is a few lines of rules, and the
container image and a plain ``pip install txbackup`` then need no extra for it. Owning the
rendering also keeps the escaping of untrusted label values (target names come from the
cluster file) in one visible place.

Every value is a gauge: a run's results are facts about that run, not counters a scrape
could rate. Names follow Prometheus' conventions: base units (seconds, bytes), ``_timestamp_seconds``
for Unix times.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from txbackup.errors import TxbackupError, UsageError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_TEXTFILE_BYTES = 1 << 20
"""A previous textfile larger than this is not ours: its last success is not read back."""

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_JOB = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""A Pushgateway job name as we accept it: it goes into the push URL's path."""


class MetricsError(TxbackupError):
    """Writing or pushing metrics failed (reported as a warning: it never fails the run)."""


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass
class Family:
    """One metric (``# HELP``, ``# TYPE gauge``) and its samples."""

    name: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):  # our own names: a bug, not input
            raise ValueError(f"bad metric name {self.name!r}")

    def add(self, value: float, **labels: str) -> Family:
        for key in labels:
            if not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
                raise ValueError(f"bad label name {key!r}")
        self.samples.append(Sample(tuple(sorted(labels.items())), float(value)))
        return self


def escape_label(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped (the
    format's only escapes), so that no name can end the value or the line early."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1 << 53:
        return str(int(value))
    return repr(value)


def render(families: Iterable[Family]) -> str:
    """The families in the text exposition format (families without samples are left out)."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} gauge")
        for sample in family.samples:
            labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in sample.labels)
            shown = f"{{{labels}}}" if labels else ""
            lines.append(f"{family.name}{shown} {format_value(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""


# -- the node-exporter textfile ------------------------------------------------------------------
def check_textfile(path: str, what: str = "metrics textfile") -> Path:
    """A textfile path checked before the run: node-exporter's textfile collector reads only
    ``*.prom`` files, and the folder must exist (it is the collector's, not ours to make)."""
    file = Path(path)
    if file.suffix != ".prom":
        raise UsageError(
            f"{what} {path}: node-exporter's textfile collector reads only *.prom files; name it NAME.prom"
        )
    folder = file.absolute().parent
    if not folder.is_dir():
        raise UsageError(f"{what} {path}: folder {folder} does not exist")
    if file.is_dir():
        raise UsageError(f"{what} {path}: is a folder, not a file")
    return file


def write_textfile(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder (named
    without ``.prom``, so the collector never reads it half-written), fsync, rename.

    The file is 0644, not owner-only like the rest of what txbackup writes: node-exporter
    runs as another user and must read it, and it holds no secret (target names, kinds,
    sizes, times and exit codes)."""
    folder = path.absolute().parent
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise MetricsError(f"metrics textfile {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise MetricsError(f"metrics textfile {path}: {exc.strerror or exc}") from None


def read_gauge(path: Path, name: str, labels: Sequence[tuple[str, str]]) -> float | None:
    """The value of one sample in an earlier textfile of ours (the last success time survives
    a failed run), or None: a missing, oversized or unparsable file or sample is no value, and
    only a finite positive number is taken (the file may have been edited by anyone)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TEXTFILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_TEXTFILE_BYTES:
        return None
    shown = ",".join(f'{k}="{escape_label(v)}"' for k, v in sorted(labels))
    prefix = f"{name}{{{shown}}} " if shown else f"{name} "
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.startswith(prefix):
            try:
                value = float(line[len(prefix) :].strip())
            except ValueError:
                return None
            return value if math.isfinite(value) and value > 0 else None
    return None


# -- the Pushgateway ------------------------------------------------------------------------------
def check_pushgateway(url: str, what: str = "pushgateway") -> str:
    """A Pushgateway base URL: http or https, a host, no credentials (never in the cluster
    file or argv), no query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"{what} {url[:80]!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{what} {url[:80]!r}: expected http(s)://HOST[:PORT][/PATH]")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"{what}: the URL holds credentials; secrets never go in the cluster file")
    if parts.query or parts.fragment:
        raise UsageError(f"{what} {url[:80]!r}: no query or fragment (the job goes in the path)")
    return url.rstrip("/")


def check_job(job: str, what: str = "job") -> str:
    if not _JOB.fullmatch(job):
        raise UsageError(f"{what} {job[:60]!r}: letters, digits, '_', '.', ':' and '-', at most 128")
    return job


def group_path(job: str, grouping: Sequence[tuple[str, str]]) -> str:
    """``/metrics/job/JOB/label/value...``: each value base64url-encoded (``label@base64``),
    the Pushgateway's form for values that may hold a slash, so nothing can change the path."""
    parts = ["metrics", "job@base64", _b64(job)]
    for key, value in grouping:
        parts += [f"{key}@base64", _b64(value)]
    return "/" + "/".join(parts)


def _b64(value: str) -> str:
    # the Pushgateway reads an empty value as "=" (base64 of nothing needs one character)
    return base64.urlsafe_b64encode(value.encode()).decode() or "="


def push(
    url: str,
    job: str,
    grouping: Sequence[tuple[str, str]],
    text: str,
    *,
    replace: bool,
    timeout: float = 10.0,
) -> None:
    """Send ``text`` to the Pushgateway at ``url`` for the group (job, grouping).

    ``replace`` (HTTP PUT) replaces every metric of the group: a successful run's picture
    is the whole truth. Without it (POST) only the metrics of the same names are replaced,
    so what the text leaves out (the last success time, after a failed run) keeps the value
    an earlier push gave it."""
    request = urllib.request.Request(
        url + group_path(job, grouping),
        data=text.encode(),
        headers={"Content-Type": CONTENT_TYPE},
        method="PUT" if replace else "POST",
    )
    where = f"pushgateway {url}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read(64 << 10)
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode("utf-8", errors="replace")
        detail = " ".join(body.split())[:200]
        said = f": {detail}" if detail else ""
        raise MetricsError(f"{where}: HTTP {exc.code} {exc.reason}{said}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MetricsError(f"{where}: {reason}") from None
