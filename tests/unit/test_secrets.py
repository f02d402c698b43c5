from __future__ import annotations

import os

import pytest

from txbackup.errors import UsageError
from txbackup.secrets import REDACTED, check_dsn, check_private_file, dsn_secret, redact, resolve_secret


def _secret_bytes(path, data: bytes):
    path.write_bytes(data)
    os.chmod(path, 0o600)


def _secret_file(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_from_environment(monkeypatch):
    monkeypatch.setenv("TXB_TEST_PW", "s3cret")
    assert resolve_secret({"password_env": "TXB_TEST_PW"}) == "s3cret"


def test_missing_environment_variable_is_named(monkeypatch):
    monkeypatch.delenv("TXB_NOT_SET", raising=False)
    with pytest.raises(UsageError, match="TXB_NOT_SET") as err:
        resolve_secret({"password_env": "TXB_NOT_SET"}, culprit='target "ledger"')
    assert str(err.value).startswith('target "ledger": ')
    assert "\n" not in str(err.value)


def test_from_file_is_stripped(tmp_path):
    secret = _secret_file(tmp_path / "pw", "  hunter2\n")
    assert resolve_secret({"password_file": str(secret)}) == "hunter2"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_file_others_may_use_is_refused_as_ssh_does(tmp_path, mode):
    secret = _secret_file(tmp_path / "pw", "hunter2\n", mode)
    with pytest.raises(UsageError) as err:
        resolve_secret({"password_file": str(secret)}, culprit='target "ledger"')
    message = str(err.value)
    assert message.startswith(f'target "ledger": password_file {secret}: permissions 0{mode:o}')
    assert f"chmod 600 {secret}" in message
    assert "hunter2" not in message and "\n" not in message


def test_file_of_the_owner_only_is_read(tmp_path):
    for mode in (0o600, 0o400):
        secret = _secret_file(tmp_path / f"pw{mode:o}", "hunter2", mode)
        assert resolve_secret({"password_file": str(secret)}) == "hunter2"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.mkdir(mode=0o700), r"Is a directory|not a regular file"),
        (lambda p: _secret_file(p, ""), "empty"),
        (lambda p: _secret_bytes(p, b"\xff\xfe\x00garbage"), "not UTF-8"),
        (lambda p: _secret_bytes(p, b"x" * 70_000), "too large"),
        (lambda p: os.mkfifo(p, 0o600), "not a regular file"),
    ],
)
def test_bad_secret_files_are_one_line(tmp_path, make, expected):
    path = tmp_path / "secret"
    make(path)
    with pytest.raises(UsageError, match=expected) as err:
        resolve_secret({"token_file": str(path)}, "token")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_device_is_not_a_secret_file():
    with pytest.raises(UsageError, match=r"not a regular file|too open"):
        resolve_secret({"password_file": "/dev/zero"})


SECRET = "Sup3r-s3cret"


@pytest.mark.parametrize(
    "dsn",
    [
        # libpq URI: userinfo, query parameters, percent-encoded names, several hosts
        f"postgresql://restore:{SECRET}@10.0.0.9:5432/ledger",
        f"postgres://:{SECRET}@h/db",
        f"postgresql://u@h/db?password={SECRET}",
        f"postgresql://u@h/db?sslmode=require&sslpassword={SECRET}",
        f"postgresql://u@h/db?passfile=/tmp/{SECRET}",
        f"postgresql://u@h/db?pass%77ord={SECRET}",
        f"postgresql://u@h/db?%70assword={SECRET}",
        f"postgresql://u@h/db?pass%2577ord={SECRET}",
        f"postgresql://u:{SECRET}@h1:5432,h2:5433/db",
        f"POSTGRESQL://u:{SECRET}@h/db",
        # libpq keyword/value: spaces around =, quotes, escaped quotes, any order
        f"host=h password={SECRET} dbname=x",
        f"password = {SECRET} host=h",
        f"host=h password='{SECRET} with spaces'",
        f"host=h password = 'it\\'s {SECRET}'",
        f"host=h\tpassword\t=\t{SECRET}",
        f"host=h sslpassword={SECRET}",
        f"host=h PASSWORD={SECRET}",
        # the MySQL client, connectors and our mysql target
        f"mysql://root:{SECRET}@127.0.0.1:3306/orders",
        f"mariadb://root:{SECRET}@h/orders",
        f"mysql://root@h/orders?password={SECRET}",
        f"mysql://root@h/orders?passwd={SECRET}",
        f"mysql://root@h/orders?pwd={SECRET}",
        f"mysql://root@h/orders?password1={SECRET}",
        f"root:{SECRET}@tcp(127.0.0.1:3306)/orders",
        f"root:{SECRET} with spaces@tcp(127.0.0.1:3306)/orders",
        f"postgresql://u:{SECRET} with spaces@h/db",
        f"Server=h;Uid=root;Pwd={SECRET};Database=orders",
        f"user=root;password={SECRET}",
    ],
)
def test_secret_in_any_dsn_syntax_is_refused_without_echoing_it(dsn):
    assert dsn_secret(dsn) is not None
    with pytest.raises(UsageError, match="password_env") as err:
        check_dsn(dsn, culprit="--to ledger=...")
    message = str(err.value)
    assert SECRET not in message and SECRET.lower() not in message.lower()
    assert message.startswith("--to ledger=...: the destination holds ") and "\n" not in message
    assert redact(dsn) == REDACTED


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://restore@10.0.0.9:5432/ledger_copy",
        "postgresql://restore:@h/db",
        "postgresql:///ledger?host=/var/run/postgresql&sslmode=verify-full&sslrootcert=/etc/ca.pem",
        "host=10.0.0.9 port=5432 user=restore dbname=ledger_copy application_name='a b'",
        "mysql://root@127.0.0.1:3306/orders_copy",
        "/var/restore/app.db",
        "relative/app copy.db",
        "10.0.0.1:7480,10.0.0.2:7480",
        "suffix:_restored",
        "ledger-restored",
    ],
)
def test_secret_free_destinations_pass(dsn):
    assert dsn_secret(dsn) is None
    assert check_dsn(dsn, culprit="--to x=...") == dsn
    assert redact(dsn) == dsn


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UsageError, match="no such file") as err:
        resolve_secret({"password_file": str(tmp_path / "nope")})
    assert str(tmp_path / "nope") in str(err.value)


def test_literal_password_refused():
    with pytest.raises(UsageError, match="password_env"):
        resolve_secret({"password": "plain"})


def test_both_sources_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TXB_TEST_PW", "x")
    with pytest.raises(UsageError, match="not both"):
        resolve_secret({"password_env": "TXB_TEST_PW", "password_file": str(tmp_path)})


def test_none_when_not_configured():
    assert resolve_secret({}) is None


def test_other_key(monkeypatch):
    monkeypatch.setenv("TXB_TOKEN", "tok")
    assert resolve_secret({"token_env": "TXB_TOKEN"}, "token") == "tok"
    with pytest.raises(UsageError, match="token_env"):
        resolve_secret({"token": "x"}, "token")


def test_bad_types():
    with pytest.raises(UsageError, match="password_env"):
        resolve_secret({"password_env": 3})
    with pytest.raises(UsageError, match="name of an environment variable"):
        resolve_secret({"password_env": "NOT A VAR"})
    with pytest.raises(UsageError, match="password_file must be a file path"):
        resolve_secret({"password_file": ["a"]})


def test_private_file_checked_before_a_library_reads_it(tmp_path):
    key = _secret_file(tmp_path / "key.pem", "-----BEGIN PRIVATE KEY-----", 0o640)
    with pytest.raises(UsageError, match=r"^--tls-key .*key.pem: permissions 0640 are too open.*chmod 600"):
        check_private_file(str(key), what="--tls-key")
    os.chmod(key, 0o600)
    check_private_file(str(key), what="--tls-key")
    with pytest.raises(UsageError, match="no such file"):
        check_private_file(str(tmp_path / "nope"), what="--tls-key")
