"""The Prometheus text format, the node-exporter textfile and the [metrics] table (no server)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.pushgateway import parse_samples
from txbackup.cli.runmetrics import LAST_SUCCESS, Run, exit_code_of
from txbackup.config import MetricsConfig, load_cluster
from txbackup.engine.progress import SilentReporter
from txbackup.errors import PauseError, UsageError
from txbackup.metrics import (
    Family,
    MetricsError,
    check_job,
    check_pushgateway,
    check_textfile,
    escape_label,
    group_path,
    read_gauge,
    render,
    write_textfile,
)


@dataclass(frozen=True)
class Named:
    name: str
    kind: str


HOSTILE = ['a"b', "back\\slash", "new\nline", "}{ x 1", "ünï", 'end"} 99\nfake_metric 1']


@pytest.mark.parametrize("name", HOSTILE)
def test_label_values_are_escaped_so_a_name_cannot_forge_a_sample(name: str) -> None:
    text = render([Family("txbackup_target_bytes", "help").add(5, target=name, kind="sqlite")])
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(samples) == 1  # a newline in the name did not start a second sample
    assert parse_samples(text, "txbackup_target_bytes") == [({"kind": "sqlite", "target": name}, 5.0)]
    assert parse_samples(text, "fake_metric") == []


def test_escape_label_rules() -> None:
    assert escape_label('x\\"\n') == 'x\\\\\\"\\n'


def test_render_format() -> None:
    text = render(
        [
            Family("txbackup_last_run_exit_code", "exit code\nsecond line").add(2, command="backup"),
            Family("txbackup_empty", "no samples: left out"),
            Family("txbackup_backup_pause_seconds", "pause").add(0.123),
        ]
    )
    assert text == (
        "# HELP txbackup_last_run_exit_code exit code\\nsecond line\n"
        "# TYPE txbackup_last_run_exit_code gauge\n"
        'txbackup_last_run_exit_code{command="backup"} 2\n'
        "# HELP txbackup_backup_pause_seconds pause\n"
        "# TYPE txbackup_backup_pause_seconds gauge\n"
        "txbackup_backup_pause_seconds 0.123\n"
    )
    assert render([]) == ""
    with pytest.raises(ValueError):
        Family("bad name", "x")
    with pytest.raises(ValueError):
        Family("ok", "x").add(1, **{"__reserved": "x"})


def test_textfile_is_written_atomically_0644_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "txbackup.prom"
    old = os.umask(0o077)  # the mode is set, not left to the umask
    try:
        write_textfile(path, "a 1\n")
        write_textfile(path, "a 2\n")
    finally:
        os.umask(old)
    assert path.read_text() == "a 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["txbackup.prom"]  # no temporary file left


def test_textfile_failure_is_a_metrics_error(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    path = folder / "x.prom"
    folder.rmdir()
    with pytest.raises(MetricsError, match=r"x\.prom"):
        write_textfile(path, "a 1\n")


def test_check_textfile(tmp_path: Path) -> None:
    assert check_textfile(str(tmp_path / "m.prom")) == tmp_path / "m.prom"
    with pytest.raises(UsageError, match=r"only \*\.prom"):
        check_textfile(str(tmp_path / "m.txt"))
    with pytest.raises(UsageError, match="does not exist"):
        check_textfile(str(tmp_path / "nope" / "m.prom"))
    (tmp_path / "d.prom").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        check_textfile(str(tmp_path / "d.prom"))


def test_read_gauge_takes_only_a_sane_value(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    labels = [("command", "backup")]
    assert read_gauge(path, LAST_SUCCESS, labels) is None  # no file
    other, ours = f'{LAST_SUCCESS}{{command="verify"}} 7', f'{LAST_SUCCESS}{{command="backup"}} 15e8'
    path.write_text(f"# HELP x\n{other}\n{ours}\n")
    assert read_gauge(path, LAST_SUCCESS, labels) == 1.5e9
    for bad in ("NaN", "+Inf", "-5", "0", "abc"):
        path.write_text(f'{LAST_SUCCESS}{{command="backup"}} {bad}\n')
        assert read_gauge(path, LAST_SUCCESS, labels) is None, bad
    path.write_bytes(b"\xff\xfe" * 10)
    assert read_gauge(path, LAST_SUCCESS, labels) is None
    path.write_text("x" * ((1 << 20) + 1))
    assert read_gauge(path, LAST_SUCCESS, labels) is None


def test_pushgateway_url_and_job_checks() -> None:
    assert check_pushgateway("http://gw:9091/") == "http://gw:9091"
    assert check_pushgateway("https://gw.example/prefix") == "https://gw.example/prefix"
    for bad, message in (
        ("ftp://gw", "expected http"),
        ("gw:9091", "expected http"),
        ("http://user:pw@gw:9091", "credentials"),
        ("http://gw:9091/?x=1", "no query"),
        ("http://gw:99999", "not a URL"),
    ):
        with pytest.raises(UsageError, match=message):
            check_pushgateway(bad)
    assert check_job("txbackup-prod") == "txbackup-prod"
    for bad in ("", "a/b", "a b", "x" * 129):
        with pytest.raises(UsageError):
            check_job(bad)


def test_group_path_base64_encodes_every_value() -> None:
    expected = "/metrics/job@base64/dHhiYWNrdXA=/command@base64/YmFja3Vw"
    assert group_path("txbackup", [("command", "backup")]) == expected
    assert "/../" not in group_path("../..", [("command", "../x")])
    assert group_path("j", [("command", "")]).endswith("/command@base64/=")


def test_exit_codes_follow_the_cli() -> None:
    assert exit_code_of(None) == 0
    assert exit_code_of(UsageError("x")) == 2
    assert exit_code_of(PauseError("x")) == 1
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert exit_code_of(RuntimeError("bug")) == 1
    from txbackup.cli import Terminated

    assert exit_code_of(Terminated()) == 143


def test_a_failed_backup_keeps_the_earlier_last_success_in_the_textfile(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    ok = Run("backup", 1000.0, SilentReporter(), metrics_file=str(path))
    ok.seen("target", {"name": "a", "phase": "captured", "ms": 12})
    ok.seen("target", {"name": "a", "phase": "exported", "ms": 30, "bytes": 100})
    ok.summary = {
        "timings": {"pause_ms": 40, "drain_ms": 3, "capture_ms": 12, "export_ms": 30},
        "targets": {"a": {"kind": "sqlite", "bytes": 100, "stored_bytes": 60}},
    }
    ok.exit_code = 0
    ok.emit(pytest.fail)
    first = path.read_text()
    success = parse_samples(first, LAST_SUCCESS)[0][1]
    assert parse_samples(first, "txbackup_backup_pause_seconds") == [({}, 0.04)]
    assert parse_samples(first, "txbackup_target_stored_bytes") == [({"target": "a", "kind": "sqlite"}, 60.0)]

    failed = Run("backup", 2000.0, SilentReporter(), metrics_file=str(path))
    failed.expect_targets([Named("a", "sqlite"), Named("b", "postgres")])
    failed.seen("target", {"name": "a", "phase": "exported", "ms": 5, "bytes": 7})
    failed.seen("phase", {"name": "unpaused", "pause_ms": 9})
    failed.exit_code = 1
    failed.emit(pytest.fail)
    second = path.read_text()
    assert parse_samples(second, LAST_SUCCESS) == [({"command": "backup"}, success)]
    assert parse_samples(second, "txbackup_last_run_exit_code") == [({"command": "backup"}, 1.0)]
    assert parse_samples(second, "txbackup_last_run_success") == [({"command": "backup"}, 0.0)]
    assert sorted(parse_samples(second, "txbackup_target_success"), key=lambda s: s[0]["target"]) == [
        ({"target": "a", "kind": "sqlite"}, 1.0),
        ({"target": "b", "kind": "postgres"}, 0.0),
    ]
    assert parse_samples(second, "txbackup_backup_pause_seconds") == [({}, 0.009)]
    assert parse_samples(second, "txbackup_backup_bytes") == []  # no complete set this time


def test_an_unwritable_textfile_is_a_warning(tmp_path: Path) -> None:
    run = Run("verify", 0.0, SilentReporter(), metrics_file=str(tmp_path / "gone" / "m.prom"))
    run.exit_code = 0
    warnings: list[str] = []
    run.emit(warnings.append)
    assert len(warnings) == 1 and "metrics not written" in warnings[0]


def _cluster(tmp_path: Path, metrics: str) -> Path:
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'[applications]\nendpoints = ["127.0.0.1:1"]\n[storage]\npath = "store"\n'
        f'[[targets]]\nname = "a"\nkind = "sqlite"\npath = "a.db"\n[metrics]\n{metrics}\n'
    )
    return config


def test_the_metrics_table(tmp_path: Path) -> None:
    table = 'textfile = "m.prom"\npushgateway = "http://gw:9091"\njob = "nightly"'
    config = load_cluster(_cluster(tmp_path, table))
    assert config.metrics == MetricsConfig(str(tmp_path / "m.prom"), "http://gw:9091", "nightly", 10.0)
    assert load_cluster(_cluster(tmp_path, "")).metrics == MetricsConfig()
    for bad, message in (
        ('textfiel = "m.prom"', 'did you mean "textfile"'),
        ('textfile = "m.txt"', r"\*\.prom"),
        ('pushgateway = "http://u:secret@gw"', "secrets never go"),
        ("pushgateway = 5", "URL string"),
        ('job = "a/b"', "job"),
        ('timeout = "1h"', "timeout"),
    ):
        with pytest.raises(UsageError, match=message) as caught:
            load_cluster(_cluster(tmp_path, bad))
        assert "secret" not in str(caught.value).replace("secrets never", "")


def _subclasses(cls: type[Exception]) -> list[type[Exception]]:
    found: list[type[Exception]] = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def test_the_readme_exit_code_table_is_true() -> None:
    """Every exit code an error class can give is in the README's table (which alerts read)."""
    import importlib
    import re

    from txbackup.cli import COMMAND_MODULES
    from txbackup.errors import TxbackupError

    for name in COMMAND_MODULES:  # every command's errors, defined anywhere they import
        importlib.import_module(f"txbackup.cli.{name}")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n### ", 1)[0]
    documented = {int(c) for row in re.findall(r"^\| ([0-9, ]+) \|", table, re.M) for c in row.split(",")}
    assert documented == {0, 1, 2, 130, 143}
    codes = {getattr(cls, "exit_code", None) for cls in _subclasses(TxbackupError)}
    assert codes <= documented, codes - documented
