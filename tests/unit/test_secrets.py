from __future__ import annotations

import pytest

from txbackup.errors import UsageError
from txbackup.secrets import resolve_secret


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
    secret = tmp_path / "pw"
    secret.write_text("  hunter2\n")
    assert resolve_secret({"password_file": str(secret)}) == "hunter2"


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
