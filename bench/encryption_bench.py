"""Encryption overhead of the byte pipeline (issue 15: at most 10% at 1 GB).

Pushes the same data through ``repository.codec`` plain (SHA-256 -> zstd ->
SHA-256) and encrypted (SHA-256 -> zstd -> age -> SHA-256), to a sink that
keeps nothing, then reads each result back through the decoder twice: as a
restore reads (data SHA-256 and sizes; the stored bytes are not hashed again)
and as ``verify --read-data`` does (both SHA-256s); prints the times and the
ratio encrypted/plain for writing (backup), reading (restore) and verifying.
The storage is left out on purpose: it adds the same time to both. Times are
this process's CPU time (the codec runs on one thread): on a shared machine,
wall-clock times measure the neighbours more than the codec.

    .venv/bin/python -m bench.encryption_bench            # 1 GiB, about a minute on 2 cores
    .venv/bin/python -m bench.encryption_bench --mib 256 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import BinaryIO

from txbackup.repository import age
from txbackup.repository.codec import Encoder, Expected, decoded

BLOCK = 4 << 20


def blocks(mib: int) -> list[bytes]:
    """Database-like data: half random bytes, half repetitive rows (zstd shrinks it ~2x)."""
    row = b"%08d,customer-%06d,balance=%010d\n"
    rows = b"".join(row % (i, i % 9973, 7 * i) for i in range(60_000))
    return [(os.urandom(BLOCK // 2) + rows)[:BLOCK] for _ in range(max(1, mib * (1 << 20) // BLOCK))]


def write(data: list[bytes], out: BinaryIO, recipient: bytes | None) -> tuple[float, Expected]:
    started = time.process_time()
    encoder = Encoder(out.write, recipient)
    for block in data:
        encoder.write(block)
    done = encoder.finish()
    out.flush()
    took = time.process_time() - started
    return took, Expected(done.size, done.sha256, done.stored_size, done.stored_sha256)


def read(path: str, expected: Expected, identity: age.Identity | None) -> float:
    """CPU seconds to read ``path`` back through the decoder as ``expected`` says: a
    restore's reading leaves the stored SHA-256 out (``codec.Expected``), verify
    --read-data's checks it too."""
    started = time.process_time()
    with open(path, "rb") as source, decoded(source, expected, "bench", identity=identity) as data:
        while data.read(1 << 20):
            pass
    return time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024, help="data size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating; the best counts (3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = blocks(args.mib)
    identity = age.Identity.generate()
    modes = {"plain": (None, None), "encrypted": (identity.public, identity)}
    best: dict[str, float] = {}
    stored: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):  # alternating, best of N: a shared machine is noisy
            for label, (recipient, opener) in modes.items():
                path = os.path.join(folder, label)
                with open(path, "wb") as out:
                    took, expected = write(data, out, recipient)
                best[f"{label}_write_s"] = min(took, best.get(f"{label}_write_s", took))
                took = read(path, dataclasses.replace(expected, stored_sha256=None), opener)
                best[f"{label}_read_s"] = min(took, best.get(f"{label}_read_s", took))
                took = read(path, expected, opener)
                best[f"{label}_verify_s"] = min(took, best.get(f"{label}_verify_s", took))
                stored[f"{label}_stored_mib"] = expected.stored_size / (1 << 20)
            print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr)
    sides = ("write", "read", "verify")
    ratios = {f"{s}_ratio": best[f"encrypted_{s}_s"] / best[f"plain_{s}_s"] for s in sides}
    size = len(data) * BLOCK >> 20
    if args.json:
        print(json.dumps({"mib": size} | best | stored | ratios, indent=2))
    else:
        print(f"{size} MiB through the codec (zstd 3, SHA-256 both sides), CPU s, best of {args.rounds}")
        for side in sides:  # read: as a restore reads; verify: as verify --read-data
            plain, enc = best[f"plain_{side}_s"], best[f"encrypted_{side}_s"]
            print(f"  {side:5}  plain {plain:6.2f} s   encrypted {enc:6.2f} s   ratio {enc / plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
