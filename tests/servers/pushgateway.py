"""A real Prometheus Pushgateway, for the metrics tests (no pytest inside).

    with Pushgateway() as gateway:
        gateway.url                           # http://127.0.0.1:<port>
        gateway.samples("txbackup_last_run_exit_code")   # [(labels, value), ...] as it serves them

The binary is Debian's ``prometheus-pushgateway`` (1.5.1 on bookworm), installed by
scripts/test; the Go module is not served by the module proxy here. It keeps what is
pushed in memory only (no persistence file) and listens on 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tests.servers.daemon import Daemon, DaemonServer

BINARY = "prometheus-pushgateway"
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def binary() -> str | None:
    return shutil.which(BINARY) or next(
        (p for p in ("/usr/bin/prometheus-pushgateway",) if Path(p).exists()), None
    )


def missing_reason() -> str | None:
    if binary() is None:
        return f"{BINARY} missing: apt-get install prometheus-pushgateway (scripts/test does)"
    return None


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` in exposition text: (labels, value) each."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            labels = {k: _unescape(v) for k, v in _LABEL.findall(match.group(2) or "")}
            found.append((labels, float(match.group(3))))
    return found


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


class Pushgateway(DaemonServer):
    def __init__(self) -> None:
        super().__init__()
        self.url = ""

    def _make_daemon(self) -> Daemon:
        path = binary()
        assert path is not None, missing_reason()

        def argv(port: int, folder: Path) -> list[str]:
            return [path, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--log.level=warn"]

        return Daemon("pushgateway", argv, ready=_ready, start_timeout=30)

    def _started(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def exposition(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    def samples(self, name: str, job: str | None = None) -> list[tuple[dict[str, str], float]]:
        """The samples of ``name`` it serves (of the group ``job`` only, when given)."""
        found = parse_samples(self.exposition(), name)
        return [s for s in found if job is None or s[0].get("job") == job]
