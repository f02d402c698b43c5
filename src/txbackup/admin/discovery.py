"""Where the applications to pause are: a list, a DNS SRV name, or the cluster file."""

from __future__ import annotations

import dns.exception
import dns.resolver

from txbackup.admin.client import Endpoint
from txbackup.errors import PauseError, UsageError


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
    resolver = dns.resolver.Resolver(configure=dns_server is None)
    if dns_server is not None:
        server = Endpoint.parse(dns_server)
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
