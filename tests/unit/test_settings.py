"""The typed reading of a target's settings."""

from __future__ import annotations

import os

import pytest

from txbackup.errors import UsageError
from txbackup.settings import (
    check_keys,
    check_name,
    name_list,
    nearest,
    resolve_paths,
    setting_bool,
    setting_duration,
    setting_int,
    setting_str,
    setting_str_list,
)


def test_settings():
    c = 'target "t"'
    assert setting_str({"host": "h"}, "host", culprit=c) == "h"
    assert setting_str({}, "host", "localhost", culprit=c) == "localhost"
    with pytest.raises(UsageError, match="host is required"):
        setting_str({}, "host", culprit=c)
    assert setting_int({"port": 5}, "port", 1, culprit=c) == 5
    with pytest.raises(UsageError, match="integer"):
        setting_int({"port": "5"}, "port", 1, culprit=c)
    with pytest.raises(UsageError, match="between 1 and 9"):
        setting_int({"jobs": 10}, "jobs", 1, culprit=c, minimum=1, maximum=9)
    assert setting_str_list({"databases": "a"}, "databases", culprit=c) == ["a"]
    with pytest.raises(UsageError, match="required"):
        setting_str_list({}, "databases", culprit=c, required=True)
    with pytest.raises(UsageError, match="twice"):
        setting_str_list({"databases": ["a", "a"]}, "databases", culprit=c)
    check_keys({"name": "t", "kind": "x", "host": "h"}, {"host"}, culprit=c)
    with pytest.raises(UsageError, match=r'^target "t": unknown setting "hots" \(did you mean "host"\?\)$'):
        check_keys({"hots": "h"}, {"host"}, culprit=c)
    with pytest.raises(UsageError, match=r'unknown settings "prot" \(did you mean "port"\?\), "zzz"$'):
        check_keys({"zzz": 1, "prot": 2}, {"host", "port"}, culprit=c)
    with pytest.raises(UsageError, match=r'unknown setting "zzz" \(known: host, kind, name\)$'):
        check_keys({"zzz": 1}, {"host"}, culprit=c)
    with pytest.raises(UsageError, match=r'unknown setting "a\\nb" \(known: zzz\)$') as err:
        check_keys({"a\nb": 1}, {"zzz"}, culprit=c, common=())
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="must not hold control characters"):
        setting_str({"host": "a\nb"}, "host", culprit=c)
    assert setting_str({"pem": "a\nb"}, "pem", culprit=c, text=True) == "a\nb"


def test_bool_and_duration_settings():
    c = 'target "t"'
    assert setting_bool({}, "tls", False, culprit=c) is False
    assert setting_bool({"tls": True}, "tls", False, culprit=c) is True
    with pytest.raises(UsageError, match=r'^target "t": tls must be true or false$'):
        setting_bool({"tls": "yes"}, "tls", False, culprit=c)
    assert setting_duration({}, "poll_interval", "2m", culprit=c) == 120.0
    assert setting_duration({"poll_interval": 5}, "poll_interval", "2m", culprit=c) == 5.0
    assert setting_duration({"poll_interval": "500ms"}, "poll_interval", "2m", culprit=c) == 0.5
    with pytest.raises(UsageError, match=r'^target "t": poll_interval must be a duration such as "10s"$'):
        setting_duration({"poll_interval": True}, "poll_interval", "2m", culprit=c)
    with pytest.raises(UsageError, match=r'^target "t": poll_interval: malformed duration'):
        setting_duration({"poll_interval": "soon"}, "poll_interval", "2m", culprit=c)
    # every duration is bounded (30 days unless the setting says less): no overflow later
    with pytest.raises(UsageError, match=r"poll_interval: duration '745h' is too long: at most 720h"):
        setting_duration({"poll_interval": "745h"}, "poll_interval", "2m", culprit=c)
    with pytest.raises(UsageError, match="too long"):
        setting_duration({"poll_interval": 10**400}, "poll_interval", "2m", culprit=c)
    with pytest.raises(UsageError, match="malformed duration 'inf'"):
        setting_duration({"poll_interval": float("inf")}, "poll_interval", "2m", culprit=c)
    with pytest.raises(UsageError, match=r"min_pause: duration '2h' is too long: at most 1h"):
        setting_duration({"min_pause": "2h"}, "min_pause", "0s", culprit=c, maximum=3600)
    with pytest.raises(UsageError, match=r"timeout must be at least 1ms"):
        setting_duration({"timeout": 0}, "timeout", "1s", culprit=c, minimum=0.001)


def test_nearest_and_names():
    assert nearest("wait_outstandng", ["wait_outstanding", "timeout"]) == "wait_outstanding"
    assert nearest("zzz", ["wait_outstanding", "timeout"]) is None
    for good in ("ledger", "a.b-c_1", "A" * 128):
        assert check_name(good, what="target name", culprit="x") == good
    for bad in ("../evil", ".", "..", "a/b", "", "A" * 129, "é", 5, None):
        with pytest.raises(UsageError, match="is not a valid name"):
            check_name(bad, what="target name", culprit="x")


def test_paths_are_found_by_their_key_and_made_absolute(tmp_path):
    base = tmp_path / "conf"
    conf = {
        "path": "a.db",
        "paths": ["b.db", "/abs/c.db"],
        "password_file": "secrets/pw",
        "bin_dir": "~/bin",
        "storage_path": "file:///x",
        "host": "relative-looking",
        "tls_ca_file": 5,
    }
    out = resolve_paths(conf, base)
    assert out["path"] == str(base / "a.db")
    assert out["paths"] == [str(base / "b.db"), "/abs/c.db"]
    assert out["password_file"] == str(base / "secrets" / "pw")
    assert out["bin_dir"] == os.path.expanduser("~/bin")
    assert out["storage_path"] == "file:///x"
    assert out["host"] == "relative-looking" and out["tls_ca_file"] == 5


def test_name_list():
    c = 'target "t"'
    assert name_list(["a", "b"], "databases", culprit=c) == ["a", "b"]
    with pytest.raises(UsageError, match=r'^target "t": databases must be a list of names$'):
        name_list(["a", ""], "databases", culprit=c, items="names")
    with pytest.raises(UsageError, match="must be a list of non-empty strings"):
        setting_str_list({"databases": [1]}, "databases", culprit=c)
    with pytest.raises(UsageError, match="must not be empty"):
        setting_str_list({"databases": []}, "databases", culprit=c, required=True)
