"""The typed reading of a target's settings."""

from __future__ import annotations

import pytest

from txbackup.errors import UsageError
from txbackup.settings import (
    check_keys,
    name_list,
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
    with pytest.raises(UsageError, match="hots"):
        check_keys({"hots": "h"}, {"host"}, culprit=c)


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


def test_name_list():
    c = 'target "t"'
    assert name_list(["a", "b"], "databases", culprit=c) == ["a", "b"]
    with pytest.raises(UsageError, match=r'^target "t": databases must be a list of names$'):
        name_list(["a", ""], "databases", culprit=c, items="names")
    with pytest.raises(UsageError, match="must be a list of non-empty strings"):
        setting_str_list({"databases": [1]}, "databases", culprit=c)
    with pytest.raises(UsageError, match="must not be empty"):
        setting_str_list({"databases": []}, "databases", culprit=c, required=True)
