"""``txbackup agent``: serve one Cassandra node to the backup engine until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType

from txbackup.agent.client import DEFAULT_PORT
from txbackup.agent.node import AgentKeys, Node, NodeConfig, parse_command
from txbackup.agent.server import AgentServer, clear_leftovers
from txbackup.cli.common import add_key_args, user_key_from_args
from txbackup.config import parse_storage_options
from txbackup.errors import UsageError
from txbackup.repository.crypto import read_blob_key
from txbackup.secrets import check_private_file, resolve_secret
from txbackup.storage import open_storage

NAME = "agent"
HELP = "serve one Cassandra node to txbackup (snapshot, upload, restore), beside the node"
DESCRIPTION = """\
Run beside one Cassandra node (one agent per node) and answer the backup
engine: take and clear snapshots with nodetool, upload the snapshot's files to
the storage (each SSTable stored once, by SHA-256), and restore files onto the
node (nodetool import, or sstableloader). The engine reaches the agents listed
in the cluster file; nothing logs in to the node.

The agent reads the node's data directories (run it as the cassandra user or
root), runs nodetool against the node, talks CQL to the node only, and writes
to the storage itself: every agent and the engine must reach the same storage.

Snapshots go through one JMX connection the agent keeps open (--jmx; a small
Java helper, run with --java, started with the agent and again if it dies), so a
snapshot inside the pause costs the flush and the hard links, not a nodetool JVM
start; without it they fall back to nodetool, with a warning. SSTable digests
are cached in --state-dir: a later backup does not read unchanged files again.

An encrypted repository (txbackup init --encrypt): blobs are encrypted to the
public key in the repository's config and named by a keyed hash, so the agent
needs the blob key (--blob-key-file, written by 'txbackup key blob-key'; it
names blobs and decrypts nothing); to restore, it also needs a user key
(--identity-file or a passphrase), which it uses to unwrap the repository key.

Prints "listening on host:port" once serving; stops on SIGINT or SIGTERM.

Example (systemd, beside a package-installed Cassandra):
  txbackup agent --host 10.0.0.5 --port 7480 --token-file /etc/txbackup/agent.token \\
      --cassandra-data /var/lib/cassandra/data --nodetool-cmd "nodetool -h 127.0.0.1 -p 7199" \\
      --cql 10.0.0.5:9042 --storage /mnt/backups --state-dir /var/lib/txbackup-agent"""

log = logging.getLogger("txbackup.agent")


def register(parser: argparse.ArgumentParser) -> None:
    net = parser.add_argument_group("serving")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help="port, 0 = any free (%(default)s)")
    net.add_argument("--token-file", metavar="FILE", help="the shared token callers must present")
    net.add_argument("--token-env", metavar="VAR", help="... or the environment variable holding it")
    net.add_argument("--no-token", action="store_true", help="accept calls without a token (tests only)")
    net.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    net.add_argument("--tls-key", metavar="FILE", help="... and this private key (PEM)")
    node = parser.add_argument_group("the node")
    node.add_argument(
        "--cassandra-data",
        metavar="DIR",
        action="append",
        required=True,
        help="a data_file_directories entry of the node (repeat for several)",
    )
    node.add_argument(
        "--nodetool-cmd",
        default="nodetool",
        metavar="CMD",
        help='how to run nodetool against this node (default "%(default)s"), e.g. "nodetool -p 7199"',
    )
    node.add_argument(
        "--cql",
        default="127.0.0.1:9042",
        metavar="HOST:PORT",
        help="the node's CQL address: the only host the agent logs in to, and sstableloader's contact point",
    )
    node.add_argument("--cql-user", metavar="USER", help="CQL user (with password from --cql-password-*)")
    node.add_argument("--cql-password-file", metavar="FILE")
    node.add_argument("--cql-password-env", metavar="VAR")
    node.add_argument(
        "--sstableloader-cmd",
        metavar="CMD",
        help="how to run sstableloader (restores); never given the CQL password: with --cql-user, "
        "include -ap CLASS (an AuthProvider that reads its own secret)",
    )
    node.add_argument(
        "--jmx",
        default="127.0.0.1:7199",
        metavar="HOST:PORT",
        help="the node's JMX address: the agent keeps one connection open (a small Java helper) so "
        "that a snapshot inside the pause is one call, not a nodetool JVM start (default %(default)s); "
        "the node reached must be the --cql node; unavailable: snapshots fall back to nodetool",
    )
    node.add_argument("--no-jmx", action="store_true", help="take snapshots with nodetool only")
    node.add_argument("--jmx-user", metavar="USER", help="JMX user (password from --jmx-password-*)")
    node.add_argument("--jmx-password-file", metavar="FILE")
    node.add_argument("--jmx-password-env", metavar="VAR")
    node.add_argument(
        "--java",
        default="java",
        metavar="CMD",
        help="the JDK's java that runs the JMX helper (a single-file source program; default %(default)s)",
    )
    node.add_argument("--stop-cmd", metavar="CMD", help="stops the node (the cold method), after a drain")
    node.add_argument("--start-cmd", metavar="CMD", help="starts the node again (the cold method)")
    where = parser.add_argument_group("files")
    where.add_argument(
        "--storage",
        required=True,
        metavar="URL",
        help="the repository, as the engine's [storage] path: a folder or a URL (s3://bucket/prefix...); "
        "credentials come from the environment (AWS_*, AZURE_*, GOOGLE_APPLICATION_CREDENTIALS)",
    )
    where.add_argument(
        "--storage-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a [storage] option (endpoint, region, path_style...), as in the cluster file; repeatable",
    )
    where.add_argument(
        "--staging-dir",
        metavar="DIR",
        help="where restored files wait for nodetool import (default: txbackup-restore beside the "
        "first data directory; keep it on the data file system)",
    )
    where.add_argument(
        "--state-dir", metavar="DIR", help="remember snapshots until cleared; clear leftovers at start"
    )
    where.add_argument(
        "--blob-key-file", metavar="FILE",
        help="an encrypted repository's blob key (chmod 600; txbackup key blob-key writes it)",
    )  # fmt: skip
    add_key_args(parser)


NODETOOL_SECRETS = ("-pw", "--password")
LOADER_SECRETS = ("-pw", "--password", "-tspw", "--truststore-password", "-kspw", "--keystore-password")


def _no_secret_on_command_line(argv: list[str], what: str, options: tuple[str, ...], instead: str) -> None:
    """Refuse a password option in a configured command: every local user can read a
    command line (``ps``, ``/proc/<pid>/cmdline``)."""
    for arg in argv[1:]:
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name in options:
            raise UsageError(f"{what}: {name} would show the password to every local user; {instead}")


def _config(args: argparse.Namespace) -> NodeConfig:
    host, _, port = str(args.cql).rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--cql {args.cql}: expected HOST:PORT")
    password = resolve_secret(
        {
            k: v
            for k, v in (("password_file", args.cql_password_file), ("password_env", args.cql_password_env))
            if v
        },
        culprit="agent CQL",
    )
    nodetool = parse_command(args.nodetool_cmd, "--nodetool-cmd")
    _no_secret_on_command_line(
        nodetool, "--nodetool-cmd", NODETOOL_SECRETS, "use -pwf FILE (--password-file)"
    )
    loader = parse_command(args.sstableloader_cmd, "--sstableloader-cmd") if args.sstableloader_cmd else []
    _no_secret_on_command_line(
        loader,
        "--sstableloader-cmd",
        LOADER_SECRETS,
        "use -ap CLASS, and -f YAML for the TLS store passwords",
    )
    jmx_host: str | None = None
    jmx_port = 7199
    if not args.no_jmx:
        jmx_host, _, jmx_text = str(args.jmx).rpartition(":")
        if not jmx_host or not jmx_text.isdigit() or not 0 < int(jmx_text) < 65536:
            raise UsageError(f"--jmx {args.jmx}: expected HOST:PORT")
        jmx_host, jmx_port = jmx_host.strip("[]"), int(jmx_text)
    jmx_password = resolve_secret(
        {
            k: v
            for k, v in (("password_file", args.jmx_password_file), ("password_env", args.jmx_password_env))
            if v
        },
        culprit="agent JMX",
    )
    if jmx_password is not None and args.jmx_user is None:
        raise UsageError("agent: --jmx-password-file/--jmx-password-env need --jmx-user")
    return NodeConfig(
        nodetool=nodetool,
        data_dirs=[Path(d) for d in args.cassandra_data],
        cql_host=host.strip("[]"),
        cql_port=int(port),
        cql_user=args.cql_user,
        cql_password=password,
        staging_dir=Path(args.staging_dir) if args.staging_dir else None,
        sstableloader=loader,
        stop_command=parse_command(args.stop_cmd, "--stop-cmd") if args.stop_cmd else [],
        start_command=parse_command(args.start_cmd, "--start-cmd") if args.start_cmd else [],
        state_dir=Path(args.state_dir) if args.state_dir else None,
        jmx_host=jmx_host,
        jmx_port=jmx_port,
        jmx_user=args.jmx_user,
        jmx_password=jmx_password,
        java=parse_command(args.java, "--java"),
    )


def _token(args: argparse.Namespace) -> str | None:
    conf = {k: v for k, v in (("token_file", args.token_file), ("token_env", args.token_env)) if v}
    token = resolve_secret(conf, "token", culprit="agent")
    if token is None and not args.no_token:
        raise UsageError("agent: give --token-file or --token-env (or --no-token, for tests only)")
    if token is not None and len(token) < 16:
        raise UsageError("agent: the token must have at least 16 characters")
    return token


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key):
        raise UsageError("agent: --tls-cert and --tls-key go together")
    check_private_file(args.tls_key, what="agent: --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"agent: cannot load the TLS certificate or key: {exc}") from None
    return context


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        raise UsageError(f"bad --port {args.port}: must be 0-65535")
    config = _config(args)
    token = _token(args)
    tls = _tls(args)
    storage = open_storage(args.storage, parse_storage_options(args.storage_option))
    blob_key = read_blob_key(args.blob_key_file) if args.blob_key_file else None
    node = Node(config, storage, AgentKeys(blob_key, user_key_from_args(args)))
    if not logging.getLogger().handlers or args.verbose:
        logging.getLogger("txbackup").setLevel(logging.INFO)
    if not args.verbose:
        # the driver logs each failed connection over several lines; the agent's own
        # error line for the call says the same in one
        logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    try:
        server = AgentServer((args.host, args.port), node, token, tls)
    except OSError as exc:
        raise UsageError(f"agent: cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    threading.Thread(target=clear_leftovers, args=(node,), name="agent-leftovers", daemon=True).start()
    if node.jmx is not None:
        node.jmx.run()  # the JMX helper, started now and again whenever it dies

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    print(f"listening on {args.host}:{server.port}", flush=True)
    if token is None:
        print("txbackup agent: WARNING: no token: anyone who reaches the port can restore", file=sys.stderr)
    if config.sstableloader and not config.loader_can_log_in:
        print(
            "txbackup agent: WARNING: restores with sstableloader will be refused: it takes CQL "
            "credentials only on its command line; add -ap CLASS to --sstableloader-cmd",
            file=sys.stderr,
        )
    log.info("agent pid %d serving %s", os.getpid(), ", ".join(args.cassandra_data))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        node.close(helper=True)
    return 0
