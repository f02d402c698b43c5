"""What the small restore benches share: their command line and their closing line."""

from __future__ import annotations

import argparse
import os

from bench.cassandra_bench import parse_list


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def sizes_rounds_parser(module: str, description: str, sizes: int, rounds: int) -> argparse.ArgumentParser:
    """``python -m bench.MODULE [--sizes MB,...] [--rounds N] [--json]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=description)
    parser.add_argument(
        "--sizes", type=lambda t: parse_list(t, "--sizes"), default=[sizes], help=f"MB of rows ({sizes})"
    )
    parser.add_argument(
        "--rounds", type=_at_least_one, default=rounds, help=f"restores per side and size; medians ({rounds})"
    )
    parser.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    return parser


def closing_line(seconds: float, load: dict[str, float]) -> str:
    return (
        f"\n({seconds:.0f} s, {os.cpu_count()} CPUs, "
        f"load average {load['before']} before, {load['after']} after)"
    )
