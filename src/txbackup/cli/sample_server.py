"""``txbackup sample-server``: run the sample pausable gRPC service until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from txbackup.admin.server import ServerTls, server_credentials
from txbackup.demo.sample_service import start_sample_server
from txbackup.durations import parse_duration
from txbackup.errors import UsageError

NAME = "sample-server"
HELP = "run a sample pausable gRPC service (for demos and tests)"
DESCRIPTION = """\
Run a sample gRPC application whose method /sample.Sample/Work (request: a delay
in milliseconds as ASCII) goes through a pause gate, and which serves the
scalar-admin protocol (rpc.Admin) on the same port. Prints "listening on
host:port" once it is serving, and stops on SIGINT or SIGTERM.

A pause that nobody undoes ends by itself after the lease (--lease 0 disables
the lease).

The scalar-admin protocol authenticates nobody: on a plaintext port anyone who
can connect may pause the service. --tls-cert/--tls-key serve TLS; with
--tls-client-ca the TLS is mutual, and a client without a certificate signed by
that CA is refused in the handshake, before any call."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=50051, help="port to listen on, 0 = any free (%(default)s)"
    )
    parser.add_argument(
        "--lease",
        default="60s",
        help="unpause by itself after this long paused, e.g. 500ms, 60s, 2m; 0 = never (%(default)s)",
    )
    parser.add_argument(
        "--reject-when-paused",
        action="store_true",
        help="answer UNAVAILABLE while paused instead of holding requests until the unpause",
    )
    tls = parser.add_argument_group("TLS (plaintext without)")
    tls.add_argument("--tls-cert", metavar="FILE", help="the server's certificate chain (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", help="its private key (PEM, an owner-only file)")
    tls.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require client certificates signed by this CA (PEM): mutual TLS",
    )


def _tls(args: argparse.Namespace) -> ServerTls | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise UsageError("--tls-client-ca goes with --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("--tls-cert and --tls-key go together")
    names = ("--tls-cert", "--tls-key", "--tls-client-ca")
    return server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca, names=names)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        raise UsageError(f"bad --port {args.port}: must be 0-65535")
    lease = parse_duration(args.lease) or None
    tls = _tls(args)
    asyncio.run(_serve(args.host, args.port, lease, args.reject_when_paused, tls))
    return 0


async def _serve(
    host: str, port: int, lease: float | None, reject_when_paused: bool, tls: ServerTls | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sample = await start_sample_server(
        host, port, lease_seconds=lease, reject_when_paused=reject_when_paused, tls=tls
    )
    try:
        print(f"listening on {sample.target}", flush=True)
        await stop.wait()
    finally:
        await sample.stop(grace=1.0)
