"""Every command over a corpus of malformed inputs.

Each command of ``txbackup.cli.COMMAND_MODULES`` (a new command joins by being
listed there) runs in-process through ``txbackup.cli.main`` (a few as real
processes) over bad TOML, wrong types and unknown keys in every table, nonsense
values, bad endpoints, bad set ids, missing files, folders and binary garbage
where files are expected, and DSNs holding secrets. Each must end with exit 2
(1 where the culprit is not the user's input), exactly one line on stderr
starting ``txbackup:``, no traceback (nor the last-resort "unexpected error"
line, which would mean a bug was caught, not an input refused), nothing paused,
and no secret in any output or in the catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_engine import make_db
from tests.servers.processes import sample_server_process, txbackup
from tests.unit.test_config_strict import _unwritable_folder
from txbackup.admin.client import AdminClient
from txbackup.cli import COMMAND_MODULES, build_parser, main
from txbackup.config import APPLICATIONS, BACKUP, CATALOG, RESTORE, STORAGE, TARGET_KINDS, TLS
from txbackup.errors import PauseError
from txbackup.settings import Table

SECRET = "Hunter2-s3cret"
SET_ID = "20261127T101500Z-3f9a"  # well formed, absent

# A valid cluster file; each corpus entry breaks one thing in it.
BASE = """\
[applications]
endpoints = ["127.0.0.1:9"]
[storage]
path = "store"
[backup]
capture_deadline = "30s"
[[targets]]
name = "app"
kind = "sqlite"
path = "app.db"
[drill.targets.app]
path = "drill/app.db"
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return Result(code, out, err)


def check(result: Result, code: int = 2, secret: str | None = SECRET, what: str = "") -> str:
    """The result is one refusal line; returns it."""
    context = f"{what}: exit {result.code}, stderr {result.err!r}"
    assert "Traceback" not in result.err, context
    assert "unexpected error" not in result.err, context
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("txbackup: "), context
    assert result.code == code, context
    if secret is not None:
        assert secret not in result.out + result.err, context
    return lines[0]


def refuse_all(
    capsys: pytest.CaptureFixture[str], command: list[str], cases: list[tuple[list[str], str]]
) -> None:
    """Each ``(arguments, expected)`` of ``cases`` after ``command``: one refusal line, exit 2,
    saying ``expected``."""
    for argv, expected in cases:
        line = check(run(capsys, *command, *argv), what=f"{command} {argv}")
        assert expected in line, line


@pytest.fixture(autouse=True)
def nothing_paused(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every pause is recorded (and fails): a refused input must never reach one."""
    calls: list[str] = []

    async def pause(self: AdminClient, *args: Any, **kwargs: Any) -> None:
        calls.append(str(self.endpoint))
        raise PauseError(f"pause {self.endpoint}: refused by the test")

    monkeypatch.setattr(AdminClient, "pause", pause)
    yield calls
    assert calls == [], f"paused {calls}: an input was refused only after the pause"


# -- the commands ----------------------------------------------------------------------------------
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBPARSERS = _subparsers()
COMMANDS = list(SUBPARSERS)


def options(command: str) -> set[str]:
    return {s for a in SUBPARSERS[command]._actions for s in a.option_strings}


POSITIONALS = {"set_id": SET_ID, "action": "list"}  # "action": of txbackup key


def positionals(command: str) -> list[str]:
    """Well-formed positional arguments of ``command`` (a set id for ID)."""
    found = []
    for action in SUBPARSERS[command]._actions:
        if action.option_strings or action.dest == "help":
            continue
        if action.nargs == "?" and action.dest not in POSITIONALS:  # optional (unlock LOCK_ID): left out
            continue
        assert action.dest in POSITIONALS, f"txbackup {command}: a corpus value for {action.dest} is needed"
        found.append(POSITIONALS[action.dest])
    return found + REQUIRED_OPTIONS.get(command, [])


REQUIRED_OPTIONS = {"forget": ["--keep-last", "1"]}
"""Options a command refuses to run without (forget: a policy), so that the corpus reaches the
part under test."""


CONFIG_COMMANDS = [c for c in COMMANDS if "--config" in options(c)]
FLEET_COMMANDS = [c for c in COMMANDS if "--endpoints" in options(c)]
REPOSITORY_COMMANDS = [c for c in COMMANDS if "--storage" in options(c) and "--catalog" in options(c)]
SET_ID_COMMANDS = [c for c in COMMANDS if any(a.dest == "set_id" for a in SUBPARSERS[c]._actions)]


def test_every_command_is_covered() -> None:
    """Every command of COMMAND_MODULES takes part: by its --config (the whole cluster
    file corpus), or by a corpus of its own below."""
    assert len(COMMANDS) == len(COMMAND_MODULES)
    own = {"demo", "sample-server", "agent"}
    missing = [c for c in COMMANDS if c not in CONFIG_COMMANDS and c not in own]
    assert not missing, f"no malformed-input corpus for: {missing}"


# -- the cluster-file corpus -------------------------------------------------------------------------
WRONG = {"str": 5, "text": 5, "path": 5, "int": "x", "bool": "no", "duration": True, "custom": [1]}
HEADERS: dict[str, Table] = {
    "[applications]": APPLICATIONS,
    "[applications.tls]": TLS,
    "[storage]": STORAGE,
    "[catalog]": CATALOG,
    "[backup]": BACKUP,
    "[restore.app]": RESTORE,
}


def _toml(value: object) -> str:
    return json.dumps(value)  # a TOML value too, for these


def _with(header: str, line: str) -> str:
    """BASE with ``line`` in table ``header`` (the table is added when BASE has none)."""
    if header in BASE:
        return BASE.replace(f"{header}\n", f"{header}\n{line}\n", 1)
    return f"{header}\n{line}\n{BASE}" if not header.startswith("[restore") else f"{BASE}{header}\n{line}\n"


CASSANDRA = 'kind = "cassandra"\nagents = ["h:1"]\nkeyspaces = ["k"]'
DYNAMODB = 'kind = "dynamodb"\nregion = "r"\ntables = ["a.t"]'
COSMOS = 'kind = "cosmos"\nsubscription_id = "s"\nresource_group = "g"\naccount = "acct"'
RDS = 'kind = "rds"\nregion = "r"\ninstance = "db1"'
FLEX = 'subscription_id = "s"\nresource_group = "g"\nserver = "srv"'


def _target(settings: str) -> str:
    """BASE with its target's kind and settings replaced."""
    return BASE.replace('kind = "sqlite"\npath = "app.db"', settings)


def _config_corpus() -> list[tuple[str, str | bytes]]:
    corpus: list[tuple[str, str | bytes]] = [
        ("bad toml", "[applications\nendpoints = [\n"),
        ("duplicate key", BASE + "[storage]\npath = 'x'\n"),
        ("binary garbage", b"\x00\xff\xfe\x9c" * 64),
        ("empty file", ""),
        ("no targets", "[storage]\npath = 'x'\n"),
        ("unknown top-level key", "colour = 'blue'\n" + BASE),
        ("unknown table", BASE + "[aplications]\nendpoints = []\n"),
        ("table as a value", "storage = 'x'\n" + BASE.replace("[storage]\npath = \"store\"\n", "")),
        ("srv = 5", _with("[applications]", "srv = 5")),
        ("srv not a DNS name", _with("[applications]", 'srv = "bad name..x"')),
        ('wait_outstanding = "no"', _with("[applications]", 'wait_outstanding = "no"')),
        ("wait_outstanding = 1", _with("[applications]", "wait_outstanding = 1")),
        ("timeout 2h", _with("[applications]", 'timeout = "2h"')),
        ("timeout huge", _with("[applications]", f'timeout = "{"9" * 400}h"')),
        ("timeout huge number", _with("[applications]", f"timeout = {'9' * 400}")),
        ("timeout inf", _with("[applications]", "timeout = inf")),
        ("timeout nan", _with("[applications]", "timeout = nan")),
        ("max_pause_wait huge", _with("[applications]", "max_pause_wait = 9223372036854775807")),
        ("capture_deadline 2h", BASE.replace('capture_deadline = "30s"', 'capture_deadline = "2h"')),
        ("capture_deadline 0", BASE.replace('capture_deadline = "30s"', "capture_deadline = 0")),
        ("min_pause huge", _with("[backup]", 'min_pause = "100000h"')),
        ("min_pause negative", _with("[backup]", "min_pause = -1")),
        ("endpoint port 99999", BASE.replace("127.0.0.1:9", "host:99999")),
        ("endpoint ':'", BASE.replace("127.0.0.1:9", ":")),
        ("endpoint empty", BASE.replace('"127.0.0.1:9"', '""')),
        ("endpoints empty string", BASE.replace('["127.0.0.1:9"]', '""')),
        ("dns_server a name", _with("[applications]", 'srv = "_a._tcp.x"\ndns_server = "localhost:53"')),
        ("tls ca_file missing", _with("[applications]", 'tls = { ca_file = "nope.pem" }')),
        ("tls ca_file not PEM", _with("[applications]", 'tls = { ca_file = "afile" }')),
        ("tls cert_file alone", _with("[applications]", 'tls = { cert_file = "afile" }')),
        ("tls key_file others may read",
         _with("[applications]", 'tls = { cert_file = "afile", key_file = "garbage.bin" }')),
        ("storage scheme", BASE.replace('path = "store"', 'path = "ftp://bucket/x"')),
        ("storage a file", BASE.replace('path = "store"', 'path = "afile"')),
        ("catalog a folder", _with("[catalog]", 'path = "adir"')),
        ("catalog under a file", _with("[catalog]", 'path = "afile/catalog.db"')),
        ("storage under a file", BASE.replace('path = "store"', 'path = "afile/store"')),
        ("target name ../evil", BASE.replace('name = "app"', 'name = "../evil"')),
        ("target name '..'", BASE.replace('name = "app"', 'name = ".."')),
        ("target name a/b", BASE.replace('name = "app"', 'name = "a/b"')),
        ("target name empty", BASE.replace('name = "app"', 'name = ""')),
        ("target name int", BASE.replace('name = "app"', "name = 5")),
        ("target kind unknown", BASE.replace('kind = "sqlite"', 'kind = "sqlit"')),
        ("targets not tables", BASE.split("[[targets]]")[0] + "targets = [5]\n"),
        ("two targets one name", BASE + BASE[BASE.index("[[targets]]") :].replace("app.db", "b.db")),
        ("target unknown key", BASE + "pth = 'x'\n"),
        ("target path int", BASE.replace('path = "app.db"', "path = 5")),
        ("target literal password", _target(f'kind = "postgres"\ndatabases = ["d"]\npassword = "{SECRET}"')),
        ("postgres port bool", _target('kind = "postgres"\ndatabases = ["d"]\nport = true')),
        ("mysql batch_bytes str", _target('kind = "mysql"\ndatabases = ["d"]\nbatch_bytes = "1"')),
        ("cassandra tls str", _target(f'{CASSANDRA}\ntls = "yes"')),
        ("cassandra snapshot_timeout 2h", _target(f'{CASSANDRA}\nsnapshot_timeout = "2h"')),
        ("dynamodb enable_pitr str", _target(f'{DYNAMODB}\nenable_pitr = "no"')),
        ("dynamodb backup_settle 1h", _target(f'{DYNAMODB}\nmode = "on-demand"\nbackup_settle = "1h"')),
        ("cassandra start_timeout 2h", _target(f'{CASSANDRA}\nstart_timeout = "2h"')),
        ("cosmos min_pause 2h", _target(f'{COSMOS}\nmin_pause = "2h"')),
        ("rds instance and cluster", _target(f'{RDS}\ncluster = "c1"')),
        ("rds restorable_wait bad", _target(f'{RDS}\nrestorable_wait = "soon"')),
        ("azure-postgres server ../x", _target(f'kind = "azure-postgres"\n{FLEX}'.replace('srv', '../x'))),
        ("azure-mysql min_pause 2h", _target(f'kind = "azure-mysql"\n{FLEX}\nmin_pause = "2h"')),
        ("restore section of no target", BASE + "[restore.ap]\npath = 'x.db'\n"),
        ("restore dsn with userinfo secret", BASE + f"[restore.app]\ndsn = 'postgresql://u:{SECRET}@h/db'\n"),
        ("restore dsn with query secret", BASE + f"[restore.app]\ndsn = 'mysql://u@h/db?passwd={SECRET}'\n"),
        ("restore dsn keyword secret", BASE + f"[restore.app]\ndsn = \"host=h password = '{SECRET}'\"\n"),
        ("restore literal password", BASE + f"[restore.app]\npassword = '{SECRET}'\n"),
    ]  # fmt: skip
    for header, table in HEADERS.items():
        corpus.append((f"unknown key in {header}", _with(header, "bogus_key = 1")))
        for setting in table.settings:
            if setting.type == "secret":
                corpus.append((f"{header} {setting.key}_env = 5", _with(header, f"{setting.key}_env = 5")))
                continue
            line = f"{setting.key} = {_toml(WRONG[setting.type])}"
            corpus.append((f"{header} {setting.key} wrong type", _with(header, line)))
    return corpus


CONFIG_CORPUS = _config_corpus()


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "garbage.bin").write_bytes(os.urandom(4096))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_every_config_command_refuses_every_malformed_cluster_file(
    command: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = folder / "cluster.toml"
    for what, text in CONFIG_CORPUS:
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        line = check(run(capsys, command, "-c", str(path), *positionals(command)), what=f"{command} / {what}")
        assert str(path) in line or what.startswith(("storage", "catalog")), f"{what}: {line}"
    assert not (folder / "store").exists(), "a refused file must not create anything"


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_missing_files_folders_and_garbage_as_cluster_file(
    command: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for given, expected in [
        (folder / "nope.toml", "not found"),
        (folder / "adir", "is a folder, not a file"),
        (folder / "garbage.bin", "cluster file"),
        (Path("/dev/null"), "no [[targets]]"),
    ]:
        line = check(run(capsys, command, "-c", str(given), *positionals(command)), what=f"{command} {given}")
        assert expected in line, line


def test_valid_base_file_is_accepted(folder: Path) -> None:
    """The corpus breaks a file that is otherwise fine (so each entry tests its one thing)."""
    from txbackup.config import load_cluster

    (folder / "cluster.toml").write_text(BASE)
    assert [t.name for t in load_cluster(folder / "cluster.toml").targets] == ["app"]
    names = " ".join(what for what, _ in CONFIG_CORPUS)
    assert [kind for kind in TARGET_KINDS if kind != "sqlite" and kind not in names] == []


def test_backup_refuses_a_storage_it_cannot_write_before_pausing(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readonly = _unwritable_folder(folder)
    (folder / "cluster.toml").write_text(BASE.replace('path = "store"', f'path = "{readonly / "store"}"'))
    line = check(run(capsys, "backup", "-c", "cluster.toml"))
    assert line.endswith(f"{readonly} is not writable"), line


# -- command-line corpora -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", FLEET_COMMANDS)
def test_fleet_flags(command: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--endpoints", "host:99999"], "port must be 1-65535"),
        (["--endpoints", ":"], "malformed endpoint"),
        (["--endpoints", ""], "no endpoints given"),
        (["--endpoints", ",,"], "no endpoints given"),
        (["--endpoints", "h:1", "--timeout", "2h"], "--timeout: duration '2h' is too long"),
        (["--endpoints", "h:1", "--timeout", "9" * 400], "too long"),
        (["--endpoints", "h:1", "--timeout", "soon"], "malformed duration"),
        (["--endpoints", "h:1", "--timeout", "0"], "at least 1ms"),
        (["--srv", "a..b"], "not a DNS name"),
        (["--srv", ""], "not a DNS name"),
        (["--srv", "_a._tcp.x", "--dns-server", "localhost:53"], "must be an IP address"),
        (["--endpoints", "h:1", "--dns-server", "1.1.1.1:53"], "--dns-server goes with --srv"),
        (["--endpoints", "h:1", "--ca-root-cert-path", "nope.pem"], "no such file"),
        (["--endpoints", "h:1", "--ca-root-cert-path", "garbage.bin"], "not a PEM certificate"),
        (["--endpoints", "h:1", "--ca-root-cert-path", "adir"], "not a regular file"),
        (["--endpoints", "h:1", "--tls-cert-path", "afile"], "go together"),
        (["-a", "h:1", "--tls-cert-path", "afile", "--tls-key-path", "garbage.bin"], "0644 are too open"),
        (["--endpoints", "h:1", "--tls-cert-path", "afile", "--tls-key-path", "nope"], "no such file"),
        (["--endpoints", "h:1", "-c", "cluster.toml"], "not both"),
        ([], "no applications"),
    ]
    if command == "pause":
        cases += [
            (["--endpoints", "h:1", "--hold", "2h"], "--hold: duration '2h' is too long"),
            (["--endpoints", "h:1", "--max-pause-wait", "99999999999h"], "too long"),
            (["--endpoints", "h:1", "--hold", "-1"], "malformed duration"),
        ]
    refuse_all(capsys, [command], cases)


@pytest.mark.parametrize("command", REPOSITORY_COMMANDS)
def test_repository_flags(command: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = positionals(command)
    cases = [
        (["--storage", "afile", *ids], "not a folder"),
        (["--storage", "ftp://bucket", *ids], "unknown scheme"),
        (["--storage", "file://host/x", *ids], "expected file:///absolute/path"),
        (["--storage", "adir", "--catalog", "adir", *ids], "is a folder"),
        (["--storage", "adir", "--catalog", "", *ids], "catalog: empty path"),
        (["--storage", "", *ids], "where are the backups"),
        (["-c", "x.toml", "--storage", "adir", *ids], "not both"),
        ([*ids], "where are the backups"),
    ]
    refuse_all(capsys, [command], cases)


BAD_SET_IDS = ["../etc", "", "x" * 300, f"{SET_ID}/..", f"{SET_ID}\n", "-", ".hidden", "a b", "é"]


@pytest.mark.parametrize("command", SET_ID_COMMANDS)
def test_bad_set_ids(command: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "cluster.toml").write_text(BASE)
    for bad in BAD_SET_IDS:
        line = check(run(capsys, command, "-c", "cluster.toml", bad), what=f"{command} {bad!r}")
        assert "not a backup set id" in line or "expected one argument" in line, line
    # well formed but absent: not the user's malformed input, the storage's answer
    line = check(run(capsys, command, "-c", "cluster.toml", SET_ID), code=1)
    assert "not found" in line or "no such" in line, line
    assert not list(folder.glob("store/**/*.json"))


def test_demo_flags(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "adir" / "something").write_text("x")
    cases = [
        (["--dir", "afile"], "not a folder"),
        (["--dir", "adir"], "not empty"),
        (["--seconds", "0"], "--seconds"),
        (["--seconds", "nan"], "--seconds"),
        (["--seconds", "1e9"], "--seconds"),
        (["--seconds", "abc"], "invalid float value"),
        (["--clients", "0"], "--clients"),
        (["--clients", "x"], "invalid int value"),
    ]
    refuse_all(capsys, ["demo"], cases)


def test_sample_server_flags(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--port", "70000"], "must be 0-65535"),
        (["--port", "x"], "invalid int value"),
        (["--lease", "99999999h"], "too long"),
        (["--lease", "soon"], "malformed duration"),
        (["--tls-cert", "afile"], "go together"),
        (["--tls-client-ca", "afile"], "--tls-client-ca goes with --tls-cert and --tls-key"),
        (["--tls-cert", "afile", "--tls-key", "garbage.bin"], "--tls-key garbage.bin: permissions 0644"),
        (["--tls-cert", "afile", "--tls-key", "nope"], "--tls-key nope: no such file"),
    ]
    refuse_all(capsys, ["sample-server"], cases)


def test_agent_flags(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "token").write_text("a-token-long-enough-0123456789\n")
    os.chmod(folder / "token", 0o644)
    (folder / "short").write_text("short\n")
    os.chmod(folder / "short", 0o600)
    (folder / "garbage").write_bytes(b"\xff\xfe\x00" * 10)
    os.chmod(folder / "garbage", 0o600)
    node = ["--cassandra-data", "adir", "--storage", "store"]
    cases = [
        ([], "the following arguments are required"),
        ([*node, "--port", "70000", "--no-token"], "must be 0-65535"),
        ([*node, "--cql", ":", "--no-token"], "expected HOST:PORT"),
        ([*node, "--token-file", "token"], "permissions 0644 are too open"),
        ([*node, "--token-file", "adir"], "not a regular file"),
        ([*node, "--token-file", "garbage"], "not UTF-8"),
        ([*node, "--token-file", "nope"], "no such file"),
        ([*node, "--token-file", "short"], "at least 16 characters"),
        ([*node, "--token-env", "TXB_NOT_SET_ANYWHERE"], "is not set"),
        ([*node, "--no-token", "--cql-password-file", "token"], "too open"),
        ([*node, "--no-token", "--tls-cert", "afile"], "go together"),
        ([*node, "--no-token", "--tls-cert", "afile", "--tls-key", "garbage.bin"], "0644 are too open"),
        ([*node, "--no-token", "--tls-cert", "afile", "--tls-key", "garbage"], "cannot load"),
        ([*node, "--no-token", "--tls-cert", "afile", "--tls-key", "nope"], "no such file"),
        (["--cassandra-data", "adir", "--storage", "ftp://x", "--no-token"], "unknown scheme"),
        ([*node, "--no-token", "--nodetool-cmd", ""], "nodetool"),
    ]
    refuse_all(capsys, ["agent"], cases)


# -- restore: destinations and credentials, against a real set ----------------------------------------
@pytest.fixture(scope="module")
def backup_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("set")
    make_db(folder / "app.db", 10)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        config = folder / "cluster.toml"
        config.write_text(BASE.replace("127.0.0.1:9", endpoint))
        result = txbackup("backup", "-c", str(config), "--json")
        assert result.returncode == 0, result.stderr
        set_id = json.loads(result.stdout.splitlines()[-1])["set_id"]
        yield config, set_id


SECRET_DSNS = [
    f"postgresql://restore:{SECRET}@10.0.0.9:5432/ledger",
    f"postgresql://restore@10.0.0.9/ledger?password={SECRET}",
    f"postgresql://restore@10.0.0.9/ledger?sslmode=require&sslpassword={SECRET}",
    f"postgresql://restore@10.0.0.9/ledger?pass%77ord={SECRET}",
    f"host=10.0.0.9 user=restore password={SECRET} dbname=ledger",
    f"host=10.0.0.9 password = '{SECRET} x' dbname=ledger",
    f"mysql://root:{SECRET}@10.0.0.9:3306/orders",
    f"mysql://root@10.0.0.9:3306/orders?password={SECRET}",
    f"mysql://root@10.0.0.9:3306/orders?passwd={SECRET}",
    f"root:{SECRET}@tcp(10.0.0.9:3306)/orders",
]


def _catalog_bytes(config: Path) -> bytes:
    store = config.parent / "store"
    return b"".join(p.read_bytes() for p in store.glob("catalog.db*"))


def test_restore_refuses_a_secret_in_any_dsn_and_records_nothing(
    backup_set: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, set_id = backup_set
    for dsn in SECRET_DSNS:
        line = check(run(capsys, "restore", "-c", str(config), set_id, "--to", f"app={dsn}"), what=dsn)
        assert "the destination holds" in line and "password_env" in line, line
        # the forgotten NAME= must not echo the DSN either
        check(run(capsys, "restore", "-c", str(config), set_id, "--to", dsn), what=f"no name: {dsn}")
    assert SECRET.encode() not in _catalog_bytes(config)
    listed = run(capsys, "restore", "-c", str(config), "--jobs", "--json")
    assert listed.code == 0 and SECRET not in listed.out
    assert not [j for j in json.loads(listed.out) if j["status"] != "complete"], "a refused --to made a job"


def test_restore_to_a_relative_path_is_recorded_absolute(
    backup_set: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A --to path is the working directory's, made absolute before the job records it:
    a --resume from elsewhere writes to the same file."""
    config, set_id = backup_set
    monkeypatch.chdir(tmp_path)
    done = run(capsys, "restore", "-c", str(config), set_id, "--to", "app=out/app.db", "--json")
    assert done.code == 0, done.err
    assert (tmp_path / "out" / "app.db").is_file()
    jobs = json.loads(run(capsys, "restore", "-c", str(config), "--jobs", "--json").out)
    assert jobs[-1]["params"]["destinations"] == {"app": str(tmp_path / "out" / "app.db")}


def test_restore_secret_refused_as_a_process_too(backup_set: tuple[Path, str]) -> None:
    config, set_id = backup_set
    result = txbackup("restore", "-c", str(config), set_id, "--to", f"app={SECRET_DSNS[1]}")
    assert result.returncode == 2 and SECRET not in result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("txbackup: --to app=...: ")


def test_restore_flags(
    backup_set: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, set_id = backup_set
    loose = tmp_path / "loose"
    loose.write_text(SECRET)
    os.chmod(loose, 0o644)
    c = ["restore", "-c", str(config)]
    for argv, expected, code in [
        ([set_id, "--to", "app"], "expected NAME=DSN", 2),
        ([set_id, "--to", "=x"], "expected NAME=DSN", 2),
        ([set_id, "--to", "app="], "expected NAME=DSN", 2),
        ([set_id, "--to", "../evil=x"], "is not a valid name", 2),
        ([set_id, "--to", "app=a.db", "--to", "app=b.db"], "given twice", 2),
        ([set_id, "--to", "other=x.db"], "no target named so in the cluster file", 2),
        ([set_id, "--target", "../evil"], "no target named", 2),
        ([set_id, "--to-password-env", "app=NOT A VAR"], "name of an environment variable", 2),
        ([set_id, "--to-password-env", "app=TXB_NOT_SET_ANYWHERE"], "is not set", 2),
        ([set_id, "--to-password-file", f"app={loose}"], "too open", 2),
        ([set_id, "--to-password-file", "app=/nope"], "no such file", 2),
        ([set_id, "--to-password-file", f"app={tmp_path}"], "not a regular file", 2),
        ([set_id, "--to-password-env", "a=X", "--to-password-file", f"a={loose}"], "not both", 2),
        (["--resume", "nope"], "no such job", 2),
        (["--resume", "nope", set_id], "takes no set id", 2),
        ([], "which set?", 2),
    ]:
        line = check(run(capsys, *c, *argv), code=code, what=f"restore {argv}")
        assert expected in line, line
    assert SECRET.encode() not in _catalog_bytes(config)


def test_restore_section_password_file_must_be_private(
    backup_set: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, set_id = backup_set
    loose = tmp_path / "pw"
    loose.write_text(SECRET)
    os.chmod(loose, 0o640)
    other = tmp_path / "cluster.toml"
    text = config.read_text().replace('path = "store"', f'path = "{config.parent / "store"}"')
    text = text.replace('path = "app.db"', f'path = "{config.parent / "app.db"}"')
    other.write_text(text + f'[restore.app]\npath = "out.db"\npassword_file = "{loose.name}"\n')
    line = check(run(capsys, "restore", "-c", str(other), set_id))
    assert f"password_file {loose}: permissions 0640 are too open" in line and "chmod 600" in line
    assert not (tmp_path / "out.db").exists()


def test_old_job_rows_with_secrets_are_redacted_and_not_resumed(
    backup_set: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A job recorded by an older txbackup (which stored the DSN whole) is redacted in the
    catalog file when it is next opened, shown redacted, and refused on --resume."""
    import sqlite3

    from txbackup.jobs import JobStore

    config, set_id = backup_set
    catalog = str(config.parent / "store" / "catalog.db")
    JobStore(catalog)
    params = {"only": [], "destinations": {"app": f"postgresql://u:{SECRET}@h/db"}, "force": False}
    with sqlite3.connect(catalog) as db:
        db.execute(
            "INSERT INTO restore_jobs VALUES ('restore-old', ?, ?, 'failed', ?, 't', 't')",
            (set_id, json.dumps(params), f"connection to postgresql://u:{SECRET}@h/db failed"),
        )
    try:
        listed = run(capsys, "restore", "-c", str(config), "--jobs", "--json")
        assert listed.code == 0 and SECRET not in listed.out + listed.err
        (row,) = [r for r in json.loads(listed.out) if r["job_id"] == "restore-old"]
        assert row["params"]["destinations"]["app"].startswith("***") and row["error"].startswith("***")
        table = run(capsys, "restore", "-c", str(config), "--jobs")
        assert "restore-old" in table.out and SECRET not in table.out
        line = check(run(capsys, "restore", "-c", str(config), "--resume", "restore-old"))
        assert "redacted" in line
        # and the file itself no longer holds it (not in a free page, not in the WAL either)
        assert SECRET.encode() not in _catalog_bytes(config)
    finally:
        with sqlite3.connect(catalog) as db:
            db.execute("DELETE FROM restore_jobs WHERE job_id = 'restore-old'")


def test_tampered_job_rows_are_one_line(
    backup_set: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalog is a file like any other: a job row that is not what txbackup writes is
    refused on --resume (exit 1, the culprit is not the command line); --jobs skips a row
    it cannot read."""
    import sqlite3

    from txbackup.jobs import JobStore

    config, set_id = backup_set
    catalog = str(config.parent / "store" / "catalog.db")
    JobStore(catalog)
    rows = {
        "restore-notjson": "{not json",
        "restore-list": "[1, 2]",
        "restore-types": json.dumps({"only": "app", "destinations": {}, "force": False}),
        "restore-dest": json.dumps({"only": [], "destinations": {"app": 5}, "force": False}),
        "restore-cred": json.dumps({"destinations": {}, "credentials": {"app": {"password": "x"}}}),
        "restore-deep": "[" * 100_000 + "]" * 100_000,
    }
    with sqlite3.connect(catalog) as db:
        db.executemany(
            "INSERT INTO restore_jobs VALUES (?, ?, ?, 'failed', NULL, 't', 't')",
            [(job_id, set_id, params) for job_id, params in rows.items()],
        )
    try:
        listed = run(capsys, "restore", "-c", str(config), "--jobs", "--json")
        assert listed.code == 0 and "Traceback" not in listed.err
        shown = {j["job_id"] for j in json.loads(listed.out)} & set(rows)
        assert shown == {"restore-types", "restore-dest", "restore-cred"}  # listed as they are
        for job_id in rows:
            line = check(run(capsys, "restore", "-c", str(config), "--resume", job_id), code=1, what=job_id)
            assert job_id in line and "malformed" in line, line
    finally:
        with sqlite3.connect(catalog) as db:
            db.executemany("DELETE FROM restore_jobs WHERE job_id = ?", [(j,) for j in rows])


def test_a_few_as_processes(folder: Path) -> None:
    """The same one line from a real process (logging, argparse and all)."""
    (folder / "bad.toml").write_text("[applications\n")
    (folder / "evil.toml").write_text(BASE.replace('name = "app"', 'name = "../evil"'))
    for argv in (
        ["backup", "-c", "bad.toml"],
        ["backup", "-c", "evil.toml"],
        ["pause", "--endpoints", "h:1", "--timeout", "2h"],
        ["list", "-c", "garbage.bin"],
        ["restore", "-c", "evil.toml", "--to", f"app=postgresql://u:{SECRET}@h/d"],
        ["show"],
    ):
        result = txbackup(*argv, cwd=str(folder))
        assert result.returncode == 2, (argv, result.stderr)
        one_line = result.stderr.count("\n") == 1 and result.stderr.startswith("txbackup: ")
        assert one_line, (argv, result.stderr)
        assert "Traceback" not in result.stderr and SECRET not in result.stderr


def test_the_last_line_of_defence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug (an exception no validation turned into a TxbackupError) is still one line,
    exit 1, without a secret it may carry; -v shows the traceback. Not a substitute for
    validating: every other test here asserts this line never shows."""
    import txbackup.cli.list as list_command

    def broken(args: argparse.Namespace) -> int:
        raise KeyError(f"postgresql://u:{SECRET}@h/db")

    monkeypatch.setattr(list_command, "run", broken)
    result = run(capsys, "list", "--storage", "x")
    assert result.code == 1 and re.fullmatch(r"txbackup: unexpected error: KeyError: .*-v.*\n", result.err)
    assert SECRET not in result.err
    verbose = run(capsys, "-v", "list", "--storage", "x")
    assert verbose.code == 1 and "Traceback" in verbose.err and verbose.err.endswith("traceback)\n")
