from __future__ import annotations

import pytest

from tests.servers.dns import SrvDnsServer
from txbackup.admin.client import Endpoint
from txbackup.admin.discovery import from_list, from_srv
from txbackup.errors import PauseError, UsageError


def test_list() -> None:
    assert from_list("a:1, b:2,") == [Endpoint("a", 1), Endpoint("b", 2)]
    with pytest.raises(UsageError, match="no endpoints"):
        from_list(" , ")
    with pytest.raises(UsageError, match="malformed endpoint 'b'"):
        from_list("a:1,b")


def test_srv_lists_every_instance() -> None:
    records = {"_admin._tcp.app.test": [("10.1.0.7", 50053), ("node-b.app.test", 50054)]}
    with SrvDnsServer(records) as dns_server:
        found = from_srv("_admin._tcp.app.test", dns_server.address)
    assert sorted(found) == [Endpoint("10.1.0.7", 50053), Endpoint("node-b.app.test", 50054)]


def test_srv_name_without_records_is_a_clear_error() -> None:
    with SrvDnsServer({"_admin._tcp.empty.test": []}) as dns_server:
        with pytest.raises(PauseError, match=r"^DNS name _admin\._tcp\.empty\.test has no SRV records$"):
            from_srv("_admin._tcp.empty.test", dns_server.address)
        with pytest.raises(PauseError, match="has no SRV records"):
            from_srv("_admin._tcp.missing.test", dns_server.address)
