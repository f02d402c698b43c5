"""Export of a PostgreSQL database into a local S3 server: txbackup against the native pipe.

    .venv/bin/python -m bench.s3_export_bench [--sizes 100,1000] [--rounds 3] [--server s3proxy|moto] [--json]

Starts a real PostgreSQL server and a local S3 server (s3proxy, filesystem
backend, or moto server: the test fixtures' helpers, ``tests/servers``) on
127.0.0.1, and a sample pausable application. For every size N (MB of rows)
one database is filled with about N MB of rows, then, in the same run:

- **ours**: ``txbackup backup`` (the real command, in a child process) of that
  database into ``s3://<bucket>/txb``: preflight, pause, capture, unpause,
  export streamed through zstd and SHA-256 into the S3 backend's multipart
  writer, manifest committed with a conditional create;
- **native**: ``pg_dump -Fc DB | <boto3 upload_fileobj from stdin>`` (the
  library's plain upload of an unknown-length stream).

Wall time and the peak RSS (VmHWM, polled from /proc) of each child are
reported as medians of ``--rounds`` rounds; ratios are ours / native (below
1: we are faster). The load average is printed with the results: numbers
taken on a busy machine say little. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backup_bench import ROW_BYTES, fill_postgres, parse_sizes, say
from tests.servers.postgres import PostgresServer
from tests.servers.s3 import MotoS3Server, S3Bucket, S3ProxyServer, S3Server

REPO = Path(__file__).resolve().parents[1]
PG_PW_ENV = "TXB_BENCH_PG_PW"
POLL_S = 0.05

UPLOADER = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
client = boto3.client("s3")
client.upload_fileobj(sys.stdin.buffer, sys.argv[1], sys.argv[2], Config=TransferConfig(max_concurrency=2))
"""


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def watch(procs: Sequence[subprocess.Popen[bytes]], what: str) -> tuple[float, dict[int, int]]:
    """Wait for ``procs``; (seconds, peak RSS in KiB per pid, read until each exits)."""
    started = time.monotonic()
    peaks: dict[int, int] = {}
    while any(p.poll() is None for p in procs):
        for p in procs:
            hwm = _hwm_kib(p.pid)
            if hwm is not None:
                peaks[p.pid] = max(peaks.get(p.pid, 0), hwm)
        time.sleep(POLL_S)
    seconds = time.monotonic() - started
    for p in procs:
        if p.returncode != 0:
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            raise RuntimeError(f"{what}: exit {p.returncode}: {err.strip()[-500:]}")
    return seconds, peaks


@dataclass
class Result:
    size_mb: int
    table_bytes: int = 0
    ours_s: list[float] = field(default_factory=list)
    ours_rss_mb: list[float] = field(default_factory=list)
    native_s: list[float] = field(default_factory=list)
    native_rss_mb: list[float] = field(default_factory=list)


def cluster_file(folder: Path, pg: PostgresServer, db: str, endpoint: str, url: str) -> Path:
    path = folder / "cluster.toml"
    path.write_text(
        f"""
[applications]
endpoints = ["{endpoint}"]

[storage]
path = "{url}"

[catalog]
path = "{folder / 'catalog.db'}"

[[targets]]
name = "pg"
kind = "postgres"
host = "{pg.host}"
port = {pg.port}
user = "{pg.user}"
password_env = "{PG_PW_ENV}"
databases = ["{db}"]
"""
    )
    return path


def run_ours(config: Path, env: dict[str, str]) -> tuple[float, float]:
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "txbackup"), "backup", "-c", str(config), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seconds, peaks = watch([proc], "txbackup backup")
    return seconds, peaks.get(proc.pid, 0) / 1024


def run_native(
    pg: PostgresServer, db: str, bucket: S3Bucket, key: str, env: dict[str, str]
) -> tuple[float, float]:
    dump = subprocess.Popen(
        ["pg_dump", "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-Fc", db],
        env={**env, "PGPASSWORD": pg.password},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    upload = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, bucket.bucket, key],
        env=env,
        stdin=dump.stdout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert dump.stdout is not None
    dump.stdout.close()  # the uploader holds the only read end
    seconds, peaks = watch([dump, upload], "pg_dump | upload")
    return seconds, peaks.get(upload.pid, 0) / 1024


def start_app(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    app = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "txbackup"), "sample-server", "--port", "0", "--lease", "600s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert app.stdout is not None
    line = app.stdout.readline()
    if not line.startswith("listening on "):
        raise RuntimeError(f"sample-server did not start: {line!r}")
    return app, line.removeprefix("listening on ").strip()


def measure(sizes: Sequence[int], rounds: int, server_kind: str) -> list[Result]:
    results = []
    server: S3Server = S3ProxyServer() if server_kind == "s3proxy" else MotoS3Server()
    with tempfile.TemporaryDirectory(prefix="txb-s3bench-") as tmp, PostgresServer() as pg, server:
        bucket = server.new_bucket("bench")
        env = {**os.environ, **bucket.process_env(), PG_PW_ENV: pg.password, "GRPC_VERBOSITY": "NONE"}
        app, endpoint = start_app(env)
        try:
            for size in sizes:
                db = pg.create_database(f"bench{size}")
                say(f"filling {db} with about {size} MB")
                result = Result(size, fill_postgres(pg, db, size * 1_000_000 // ROW_BYTES))
                for round_no in range(rounds):
                    work = Path(tmp) / f"{size}-{round_no}"
                    work.mkdir()
                    config = cluster_file(work, pg, db, endpoint, bucket.url(f"txb-{size}-{round_no}"))
                    seconds, rss = run_ours(config, env)
                    result.ours_s.append(seconds)
                    result.ours_rss_mb.append(rss)
                    say(f"  {size} MB round {round_no + 1}: txbackup {seconds:.2f} s, {rss:.0f} MB")
                    seconds, rss = run_native(pg, db, bucket, f"native-{size}-{round_no}.dump", env)
                    result.native_s.append(seconds)
                    result.native_rss_mb.append(rss)
                    say(f"  {size} MB round {round_no + 1}: pg_dump | upload {seconds:.2f} s, {rss:.0f} MB")
                results.append(result)
        finally:
            app.terminate()
            app.wait(30)
    return results


def summary(results: Sequence[Result], server: str) -> dict[str, Any]:
    med = statistics.median
    return {
        "server": server,
        "load_average": os.getloadavg(),
        "sizes": [
            {
                "size_mb": r.size_mb,
                "table_mb": round(r.table_bytes / 1e6, 1),
                "ours_s": round(med(r.ours_s), 2),
                "native_s": round(med(r.native_s), 2),
                "ratio": round(med(r.ours_s) / med(r.native_s), 2),
                "ours_peak_rss_mb": round(med(r.ours_rss_mb)),
                "native_uploader_peak_rss_mb": round(med(r.native_rss_mb)),
            }
            for r in results
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.s3_export_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=parse_sizes, default=[100, 1000], help="MB of rows (default 100,1000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; medians (default 3)")
    parser.add_argument("--server", choices=["s3proxy", "moto"], default="s3proxy")
    parser.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    args = parser.parse_args(argv)
    say(f"load average before: {os.getloadavg()}")
    data = summary(measure(args.sizes, args.rounds, args.server), args.server)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"S3 export ({data['server']}), medians of {args.rounds}; load average {data['load_average']}")
    print(
        f"{'size':>6} {'table':>8} {'txbackup':>9} {'pg_dump|up':>11} {'ratio':>6}"
        f" {'our RSS':>8} {'upl. RSS':>9}"
    )
    for s in data["sizes"]:
        print(
            f"{s['size_mb']:>4}MB {s['table_mb']:>6}MB {s['ours_s']:>8}s {s['native_s']:>10}s"
            f" {s['ratio']:>6} {s['ours_peak_rss_mb']:>6}MB {s['native_uploader_peak_rss_mb']:>7}MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
