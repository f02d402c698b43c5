"""Where the applications to pause are: a list, a DNS SRV name, or the cluster file."""

from __future__ import annotations

import ipaddress
import re

import dns.exception
import dns.resolver

from txbackup.admin.client import Endpoint
from txbackup.errors import PauseError, UsageError

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def check_srv_name(name: object, *, what: str = "srv") -> str:
    """A DNS name to look SRV records up for (``_admin._tcp.app.ns.svc``): labels of
    letters, digits, ``_`` and ``-``, at most 63 each and 253 in all."""
    text = name.rstrip(".") if isinstance(name, str) else ""
    if not text or len(text) > 253 or not all(_LABEL.fullmatch(label) for label in text.split(".")):
        shown = repr(name)[:80]
        raise UsageError(f"{what} {shown}: not a DNS name (like _admin._tcp.app.ns.svc.cluster.local)")
    return text


def check_dns_server(text: object, *, what: str = "dns_server") -> Endpoint:
    """The ``ip:port`` of a DNS server to ask instead of the system's resolver."""
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a host:port string")
    try:
        server = Endpoint.parse(text)
        ipaddress.ip_address(server.host)
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}") from None
    except ValueError:
        raise UsageError(f"{what} {text!r}: the DNS server must be an IP address and port") from None
    return server


def from_list(text: str) -> list[Endpoint]:
    """Endpoints from ``host:port,host:port``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError("no endpoints given: expected host:port[,host:port...]")
    return [Endpoint.parse(item) for item in items]


def from_srv(name: str, dns_server: str | None = None, timeout: float = 5.0) -> list[Endpoint]:
    """Endpoints from the SRV records of ``name`` (e.g. ``_admin._tcp.app.ns.svc``).

    ``dns_server`` (``host:port``) overrides the system resolver.
    """
    name = check_srv_name(name)
    resolver = dns.resolver.Resolver(configure=dns_server is None)
    if dns_server is not None:
        server = check_dns_server(dns_server)
        resolver.nameservers = [server.host]
        resolver.port = server.port
    resolver.lifetime = timeout
    try:
        answer = resolver.resolve(name, "SRV")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        raise PauseError(f"DNS name {name} has no SRV records") from None
    except dns.resolver.NoNameservers as exc:
        raise PauseError(f"DNS name {name}: no name server answered ({exc})") from None
    except dns.exception.Timeout:
        raise PauseError(f"DNS name {name}: the SRV lookup timed out after {timeout:g}s") from None
    except dns.exception.DNSException as exc:
        raise PauseError(f"DNS name {name}: {exc}") from None
    endpoints = [
        Endpoint(str(record.target).rstrip("."), int(record.port))
        for record in answer  # type: ignore[attr-defined]
    ]
    if not endpoints:
        raise PauseError(f"DNS name {name} has no SRV records")
    return endpoints
