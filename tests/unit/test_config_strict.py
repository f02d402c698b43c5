"""The cluster file is read strictly: every table through one typed reader, all of it
at load time (before anything is paused), relative paths relative to the file."""

from __future__ import annotations

import argparse
import os
import re
import textwrap
from pathlib import Path

import pytest

from tests.certs import CertificateAuthority
from txbackup.admin.client import Endpoint
from txbackup.cli.common import applications_from_args
from txbackup.config import APPLICATIONS, BACKUP, CATALOG, RESTORE, STORAGE, TLS, load_cluster
from txbackup.errors import UsageError

TARGET = """
[[targets]]
name = "app"
kind = "sqlite"
path = "data/app.db"
"""


def write(folder: Path, text: str, name: str = "cluster.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(folder: Path, text: str) -> str:
    with pytest.raises(UsageError) as err:
        load_cluster(write(folder, text))
    message = str(err.value)
    assert "\n" not in message and err.value.exit_code == 2
    return message


def test_a_minimal_file_gets_the_defaults(tmp_path: Path) -> None:
    config = load_cluster(write(tmp_path, TARGET))
    apps = config.applications
    assert apps.endpoints == [] and apps.srv is None and apps.wait_outstanding is True
    assert apps.options.timeout == 10.0 and apps.options.tls is None and apps.max_pause_wait_ms is None
    assert config.storage == str(tmp_path / "backups")
    assert config.catalog == str(tmp_path / "backups" / "catalog.db")
    assert (config.capture_deadline_s, config.min_pause_s) == (30.0, 0.0)
    assert config.restore == {}


def test_every_table_is_read(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, "app")  # app-ca.pem, app-client.pem, app-client.key
    ca.client()
    config = load_cluster(
        write(
            tmp_path,
            """
            [applications]
            endpoints = ["10.0.0.5:50053", "[::1]:50054"]
            srv = "_admin._tcp.app.ns.svc.cluster.local."
            dns_server = "10.96.0.10:53"
            timeout = "1h"
            wait_outstanding = false
            max_pause_wait = 90
            [applications.tls]
            ca_file = "app-ca.pem"
            override_authority = "app.example.com"
            cert_file = "app-client.pem"
            key_file = "app-client.key"
            [storage]
            path = "store"
            [catalog]
            path = "/var/lib/txbackup/catalog.db"
            [backup]
            capture_deadline = "500ms"
            min_pause = "2m"
            [restore.app]
            path = "copy/app.db"
            """
            + TARGET,
        )
    )
    apps = config.applications
    assert apps.endpoints == [Endpoint("10.0.0.5", 50053), Endpoint("::1", 50054)]
    assert apps.srv == "_admin._tcp.app.ns.svc.cluster.local" and apps.dns_server == "10.96.0.10:53"
    assert apps.options.timeout == 3600.0 and apps.wait_outstanding is False
    assert apps.max_pause_wait_ms == 90_000
    assert apps.options.tls is not None and apps.options.tls.ca_file == str(tmp_path / "app-ca.pem")
    assert apps.options.tls.cert_file == str(tmp_path / "app-client.pem")
    assert apps.options.tls.key_file == str(tmp_path / "app-client.key")
    assert apps.options.tls.override_authority == "app.example.com"
    assert config.storage == str(tmp_path / "store")
    assert config.catalog == "/var/lib/txbackup/catalog.db"
    assert (config.capture_deadline_s, config.min_pause_s) == (0.5, 120.0)
    assert config.restore == {"app": {"path": str(tmp_path / "copy" / "app.db"), "password": {}}}


@pytest.mark.parametrize(
    ("table", "header"),
    [
        (APPLICATIONS, "[applications]"),
        (TLS, "[applications.tls]"),
        (STORAGE, "[storage]"),
        (CATALOG, "[catalog]"),
        (BACKUP, "[backup]"),
        (RESTORE, "[restore.app]"),
    ],
)
def test_unknown_keys_in_every_table_name_the_nearest_known_one(tmp_path, table, header) -> None:
    known = table.known()[0]
    typo = known[:-1] + ("x" if known[-1] != "x" else "y")
    message = load_error(tmp_path, f"{header}\n{typo} = 1\n{TARGET}")
    assert message.startswith(f"cluster file {tmp_path / 'cluster.toml'} {header.replace('app]', 'app]')}")
    help_text = next(s.help for s in table.settings if known in s.names())
    assert f'unknown setting "{typo}" (did you mean "{known}"? {help_text})' in message


def test_unknown_tables_and_keys_far_from_any(tmp_path: Path) -> None:
    message = load_error(tmp_path, f"[aplications]\nendpoints = []\n{TARGET}")
    assert 'unknown setting "aplications" (did you mean "applications"?)' in message
    message = load_error(tmp_path, f"colour = 'blue'\n{TARGET}")
    assert 'unknown setting "colour"' in message and "known: applications, backup" in message
    message = load_error(tmp_path, "[[targets]]\nname = 'a'\nkind = 'sqlite'\npth = 'a.db'\n")
    assert 'target "a": unknown setting "pth" (did you mean "path"? the database file (WAL mode))' in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('wait_outstanding = "no"', "wait_outstanding must be true or false"),
        ("wait_outstanding = 0", "wait_outstanding must be true or false"),
        ("srv = 5", "srv 5: not a DNS name"),
        ('srv = "a..b"', "not a DNS name"),
        ('srv = "bad name"', "not a DNS name"),
        ('srv = ""', "not a DNS name"),
        ('dns_server = "localhost:53"', "must be an IP address"),
        ("dns_server = 53", "dns_server must be a host:port string"),
        ('endpoints = ["host:99999"]', "port must be 1-65535"),
        ('endpoints = [":"]', "malformed endpoint ':'"),
        ('endpoints = [""]', "malformed endpoint ''"),
        ('endpoints = ""', "no endpoints given"),
        ("endpoints = [5]", "endpoints must be a list of host:port strings"),
        ("endpoints = 5", "endpoints must be a list of host:port strings"),
        ('timeout = "2h"', "timeout: duration '2h' is too long: at most 1h"),
        ("timeout = 0", "timeout must be at least 1ms"),
        ("timeout = " + "9" * 400, "too long"),
        ('timeout = "' + "9" * 400 + 'h"', "too long"),
        ("timeout = true", 'timeout must be a duration such as "10s"'),
        ('max_pause_wait = "61m"', "max_pause_wait: duration '61m' is too long: at most 1h"),
        ('tls = "yes"', "tls must be true, false or a [applications.tls] table"),
        ("tls = { ca_file = 'missing.pem' }", "ca_file " + "{dir}/missing.pem: no such file"),
        ("tls = { ca_file = 'a', ca_pem = 'b' }", "give either ca_file or ca_pem"),
        ("tls = { ca_fil = 'a' }", 'unknown setting "ca_fil" (did you mean "ca_file"? the CA certificate'),
        ('timeout = "10s\\u0000"', "malformed duration"),
    ],
)
def test_applications_nonsense_is_refused(tmp_path: Path, line: str, expected: str) -> None:
    message = load_error(tmp_path, f"[applications]\n{line}\n{TARGET}")
    assert expected.format(dir=tmp_path) in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[backup]\ncapture_deadline = '2h'", "capture_deadline: duration '2h' is too long: at most 1h"),
        ("[backup]\ncapture_deadline = '0s'", "capture_deadline must be at least 1ms"),
        ("[backup]\nmin_pause = '3601s'", "min_pause: duration '3601s' is too long: at most 1h"),
        ("[backup]\nmin_pause = -1", "malformed duration '-1'"),
        ("[storage]\npath = ''", "path must be a non-empty string"),
        ("[storage]\npath = 5", "path must be a non-empty string"),
        ("[storage]\npath = 'ftp://bucket'", "unknown scheme 'ftp'"),
        ("[catalog]\npath = ['a']", "path must be a non-empty string"),
        ('[catalog]\npath = "a\\u0000b"', "path must not hold control characters"),
        ("storage = 'x'", "[storage] must be a table"),
        ("applications = []", "[applications] must be a table"),
        ("restore = 1", "[restore] must hold [restore.NAME] tables"),
        ("[restore.ap]\npath = 'x.db'", "no target is named 'ap' (did you mean \"app\"?)"),
        ("[restore.'../evil']\npath = 'x.db'", "'../evil' is not a valid name"),
        ("[restore.app]\npath = 'a'\ndir = 'b'", "give either path or dir, not both"),
        ("[restore.app]\nport = true", "port must be an integer"),
        ("[restore.app]\nport = 0", "port must be between 1 and 65535"),
        ("[restore.app]\npassword = 'hunter2'", "do not write the password in the cluster file"),
        ("[restore.app]\npassword_env = 'A B'", "password_env must be the name of an environment variable"),
    ],
)
def test_other_tables_nonsense_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    message = load_error(tmp_path, f"{text}\n{TARGET}")
    assert expected in message
    assert "hunter2" not in message


@pytest.mark.parametrize("name", ["../evil", ".", "..", "a/b", "a b", "", "x" * 129, "é", "a\nb", 5, True])
def test_target_names_are_refused_at_load(tmp_path: Path, name: object) -> None:
    value = f'"{name}"' if isinstance(name, str) else str(name).lower()
    value = value.replace("\n", "\\n")
    message = load_error(tmp_path, f"[[targets]]\nname = {value}\nkind = 'sqlite'\npath = 'a.db'\n")
    assert "is not a valid name" in message and "[[targets]] #1" in message


def test_targets_nonsense_is_refused(tmp_path: Path) -> None:
    assert "no [[targets]]" in load_error(tmp_path, "[storage]\npath = 'x'\n")
    assert "no [[targets]]" in load_error(tmp_path, "targets = 5\n")
    assert "[[targets]] #1 must be a table" in load_error(tmp_path, "targets = [5]\n")
    assert "a target needs a name" in load_error(tmp_path, "[[targets]]\nkind = 'sqlite'\n")
    message = load_error(tmp_path, "[[targets]]\nname = 'a'\nkind = 'sqlit'\npath = 'a.db'\n")
    assert 'unknown kind \'sqlit\' (did you mean "sqlite"?' in message
    message = load_error(tmp_path, TARGET + TARGET.replace("data/app.db", "b.db"))
    assert "target names must be unique (app twice)" in message
    message = load_error(
        tmp_path, "[[targets]]\nname = 'pg'\nkind = 'postgres'\ndatabases = ['a']\nport = true\n"
    )
    assert 'target "pg": port must be an integer' in message
    message = load_error(
        tmp_path, "[[targets]]\nname = 'pg'\nkind = 'postgres'\ndatabases = ['a']\nhost = ''\n"
    )
    assert 'target "pg": host must be a non-empty string' in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[applications\n", "Expected ']'"),
        (b"\xff\xfe\x00\x01garbage", "not UTF-8 text"),
        (b"a = 1\na = 2\n", "Cannot overwrite a value"),
        (b"x = " + b"[" * 5000 + b"]" * 5000, "cluster file"),
    ],
)
def test_malformed_files_are_one_line(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "cluster.toml"
    path.write_bytes(data)
    with pytest.raises(UsageError, match=expected) as err:
        load_cluster(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_cluster(tmp_path / "nope.toml")
    with pytest.raises(UsageError, match="is a folder, not a file"):
        load_cluster(tmp_path)


def test_relative_paths_are_relative_to_the_file_wherever_txbackup_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "tls").mkdir(parents=True)
    CertificateAuthority(tmp_path / "conf" / "tls", "app").client()
    path = write(
        tmp_path / "conf",
        """
        [applications.tls]
        ca_file = "tls/app-ca.pem"
        cert_file = "tls/app-client.pem"
        key_file = "tls/app-client.key"
        [storage]
        path = "../store"
        [catalog]
        path = "index/catalog.db"
        [[targets]]
        name = "app"
        kind = "sqlite"
        paths = ["db/a.db", "/abs/b.db"]
        [[targets]]
        name = "pg"
        kind = "postgres"
        databases = ["x"]
        password_file = "secrets/pg"
        bin_dir = "pgbin"
        [restore.pg]
        host = "10.0.0.9"
        password_file = "secrets/pg-restore"
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_cluster(os.path.relpath(path))
    conf = tmp_path / "conf"
    assert config.storage == str(tmp_path / "store")
    assert config.catalog == str(conf / "index" / "catalog.db")
    assert config.applications.options.tls is not None
    tls = config.applications.options.tls
    files = ("app-ca.pem", "app-client.pem", "app-client.key")
    assert (tls.ca_file, tls.cert_file, tls.key_file) == tuple(str(conf / "tls" / f) for f in files)
    sqlite, pg = config.targets
    assert sqlite.paths == [str(conf / "db" / "a.db"), "/abs/b.db"]  # type: ignore[attr-defined]
    assert pg.server.secret_conf == {"password_file": str(conf / "secrets" / "pg")}  # type: ignore[attr-defined]
    assert pg.bin_dir == str(conf / "pgbin")  # type: ignore[attr-defined]
    assert config.restore["pg"] == {
        "host": "10.0.0.9",
        "password": {"password_file": str(conf / "secrets" / "pg-restore")},
    }


def test_a_dsn_with_a_password_in_the_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    for dsn in ("postgresql://u:hunter2@h/db", "host=h password = 'hunter2'", "mysql://u@h/d?passwd=hunter2"):
        message = load_error(tmp_path, f"{TARGET}\n[restore.app]\ndsn = \"{dsn}\"\n")
        assert "restore.app.dsn holds a pass" in message and "hunter2" not in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[targets]]\nname = 'd'\nkind = 'dynamodb'\nregion = 'r'\ntables = ['a.t']\n"
         "endpoint_url = 'http://AKIA:hunter2@localhost:4566'", "targets[0].endpoint_url"),
        ("[[targets]]\nname = 'c'\nkind = 'cosmos'\nsubscription_id = 's'\nresource_group = 'g'\n"
         "account = 'acct'\nafter_restore = ['/bin/tool', '--password=hunter2']",
         "targets[0].after_restore[1]"),
        ("[applications.tls]\noverride_authority = 'x token=hunter2'\n" + TARGET,
         "applications.tls.override_authority"),
    ],
)  # fmt: skip
def test_a_secret_anywhere_in_the_file_is_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    message = load_error(tmp_path, text)
    assert f": {key} holds a " in message and "hunter2" not in message


def _flags(**given: object) -> argparse.Namespace:
    args = {
        "config": None,
        "endpoints": None,
        "srv": None,
        "dns_server": None,
        "timeout": None,
        "tls": False,
        "ca_root_cert_path": None,
        "override_authority": None,
        "tls_cert_path": None,
        "tls_key_path": None,
        "k8s_release": None,
        "k8s_namespace": None,
        "kubeconfig": None,
        "k8s_context": None,
    }
    return argparse.Namespace(**(args | given))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"endpoints": "h:1", "timeout": "2h"}, "--timeout: duration '2h' is too long: at most 1h"),
        ({"endpoints": "h:1", "timeout": "0"}, "--timeout must be at least 1ms"),
        ({"endpoints": "h:1", "timeout": "soon"}, "--timeout: malformed duration 'soon'"),
        ({"endpoints": "h:1", "timeout": ""}, "--timeout: malformed duration ''"),
        ({"endpoints": "h:1", "ca_root_cert_path": ""}, "--ca-root-cert-path must be a non-empty string"),
        ({"endpoints": "h:1", "override_authority": ""}, "--override-authority must be a non-empty string"),
        ({"endpoints": "host:99999"}, "--endpoints: malformed endpoint 'host:99999': port must be 1-65535"),
        ({"endpoints": ":"}, "--endpoints: malformed endpoint ':'"),
        ({"endpoints": ""}, "--endpoints: no endpoints given"),
        ({"endpoints": " , "}, "--endpoints: no endpoints given"),
        ({"srv": "a..b"}, "--srv 'a..b': not a DNS name"),
        ({"srv": ""}, "--srv '': not a DNS name"),
        ({"srv": "_a._tcp.x", "dns_server": "localhost:53"}, "--dns-server 'localhost:53': the DNS server"),
        ({"srv": "_a._tcp.x", "dns_server": "1.2.3.4"}, "--dns-server: malformed endpoint '1.2.3.4'"),
        ({"endpoints": "h:1", "dns_server": "1.2.3.4:53"}, "--dns-server goes with --srv"),
        ({"endpoints": "h:1", "ca_root_cert_path": "/nope.pem"}, "--ca-root-cert-path /nope.pem: no such"),
        ({"endpoints": "h:1", "tls_cert_path": "c.pem"}, "--tls-cert-path and --tls-key-path go together"),
        ({"endpoints": "h:1", "tls_cert_path": "c.pem", "tls_key_path": "/nope.key"},
         "--tls-key-path /nope.key: no such file"),
        ({"config": "c.toml", "timeout": "5s"}, "--timeout goes with --endpoints/--srv"),
        ({"config": "c.toml", "endpoints": "h:1"}, "give either --config or --endpoints/--srv"),
        ({}, "no applications"),
        ({"k8s_release": ["Scalar"]}, "--k8s-release 'Scalar': not a Helm release name"),
        ({"k8s_release": ["s"], "k8s_namespace": "a.b"}, "--k8s-namespace 'a.b': not a Kubernetes namespace"),
        ({"k8s_release": ["s"], "endpoints": "h:1"}, "give either --k8s-release or --endpoints/--srv"),
        ({"endpoints": "h:1", "k8s_namespace": "prod"}, "--k8s-namespace goes with --k8s-release"),
        ({"endpoints": "h:1", "kubeconfig": "kc"}, "--kubeconfig goes with --k8s-release"),
    ],
)
def test_command_line_flags_follow_the_same_rules(given: dict[str, object], expected: str) -> None:
    with pytest.raises(UsageError) as err:
        applications_from_args(_flags(**given))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_readme_shows_every_declared_setting() -> None:
    """Each setting is declared once (txbackup.config); the README's cluster file shows it."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## The cluster file") :]
    section = section[: section.index("\n## ", 5)]
    for table in (APPLICATIONS, TLS, STORAGE, CATALOG, BACKUP, RESTORE):
        for key in table.known():
            assert re.search(rf"\b{re.escape(key)}\b", section), f"{table.title} {key} not in the README"


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process may not write in: a read-only one when not root, else a
    read-only file system's (root may write anywhere else)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    if not os.access(folder, os.W_OK):
        return folder
    if os.path.isdir("/proc/sys") and not os.access("/proc/sys", os.W_OK):
        return Path("/proc/sys")
    pytest.skip("no folder this process cannot write in (root, and no read-only file system)")


def test_a_backup_checks_the_storage_is_writable_before_anything(tmp_path: Path) -> None:
    from txbackup.config import check_places

    readonly = _unwritable_folder(tmp_path)
    storage = str(readonly / "store")
    assert check_places(storage, None)[1] == str(readonly / "store" / "catalog.db")  # reading is fine
    with pytest.raises(UsageError) as err:
        check_places(storage, None, writable=True)
    assert str(err.value) == f"storage {storage}: {readonly} is not writable"
    writable = str(tmp_path / "store")
    with pytest.raises(UsageError, match=r"catalog .* is not writable"):
        check_places(writable, str(readonly / "catalog.db"), writable=True)
    assert check_places(writable, None, writable=True) == (writable, str(tmp_path / "store" / "catalog.db"))


@pytest.mark.parametrize(
    ("kind", "library", "settings"),
    [
        ("postgres", "psycopg", 'databases = ["a"]'),
        ("mysql", "pymysql", 'databases = ["a"]'),
    ],
)
def test_a_kind_whose_library_is_missing_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, library: str, settings: str
) -> None:
    """`pip install txbackup` alone: a target kind whose driver is an extra is one line
    naming the extra to install, not a ModuleNotFoundError traceback."""
    import sys

    monkeypatch.setitem(sys.modules, library, None)  # `import <library>` now fails
    monkeypatch.delitem(sys.modules, f"txbackup.targets.{kind}.target", raising=False)
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(f'[[targets]]\nname = "t"\nkind = "{kind}"\n{settings}\n')
    with pytest.raises(UsageError) as refused:
        load_cluster(cluster)
    message = str(refused.value)
    assert "\n" not in message
    assert f'target "t" ({kind}): its library is not installed ({library})' in message
    assert message.endswith(f"pip install 'txbackup[{kind}]'")
