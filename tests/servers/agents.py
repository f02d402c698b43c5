"""The Cassandra agent's HTTP server in this process, for tests of its protocol."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from txbackup.agent import server
from txbackup.agent.node import Node


@contextmanager
def serving_agent(node: Node, token: str) -> Iterator[str]:
    """An ``AgentServer`` of ``node`` on a free 127.0.0.1 port, served by a thread;
    yields its "127.0.0.1:port" and shuts it down at exit."""
    httpd = server.AgentServer(("127.0.0.1", 0), node, token)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
