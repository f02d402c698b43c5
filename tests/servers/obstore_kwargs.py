"""The keyword arguments of an obstore store bound to a test server (no pytest inside)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def obstore_kwargs(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``config``, ``client_options`` and ``retry_config`` for an obstore store: the
    server's ``settings`` with the test's ``overrides`` over them, ``client_options``
    (default: plain http allowed, as the servers speak it) and ``retry_config`` split out."""
    config = {**settings, **overrides}
    client_options = config.pop("client_options", {"allow_http": True})
    retry_config = config.pop("retry_config", None)
    return {"config": config, "client_options": client_options, "retry_config": retry_config}
