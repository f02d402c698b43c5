"""What the end-to-end tests share: writing a cluster file, running a backup as a
user does and reading its result."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.servers.processes import txbackup

PHASES = ["preflight", "pause", "capture", "unpaused", "export", "commit"]


def sqlite_targets(folder: Path, *names: str) -> str:
    """``[[targets]]`` sections of SQLite targets ``<name>`` at ``folder/<name>.db``."""
    return "".join(
        f'\n[[targets]]\nname = "{n}"\nkind = "sqlite"\npath = "{folder / f"{n}.db"}"\n' for n in names
    )


def write_cluster(config: Path, endpoint: str, storage: str, rest: str) -> Path:
    """Write the cluster file ``config``: the applications at ``endpoint``, the
    ``[storage]`` section's lines ``storage``, then ``rest`` (targets, catalog...)."""
    config.write_text(f'\n[applications]\nendpoints = ["{endpoint}"]\n\n[storage]\n{storage}\n{rest}')
    return config


def check_backup_events(stdout: str) -> dict[str, Any]:
    """The events of ``backup --json``: every phase in order, then the result (returned)."""
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [e["name"] for e in events if e["event"] == "phase"] == PHASES
    final: dict[str, Any] = events[-1]
    assert final["event"] == "result" and final["restore_point"]
    return final


def backup_set_id(config: Path, env: dict[str, str] | None = None) -> str:
    """Run ``backup --json`` of ``config``; it must succeed: the new set's id."""
    result = txbackup("backup", "-c", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout.splitlines()[-1])["set_id"])


def verify_intact(config: Path, set_id: str, env: dict[str, str] | None = None) -> None:
    """``verify`` of the set must say it is intact."""
    verified = txbackup("verify", "-c", str(config), set_id, env=env)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stderr


def restore_sqlite(
    config: Path, set_id: str, out: Path, names: Sequence[str], env: dict[str, str] | None = None
) -> None:
    """``restore`` of the set's SQLite targets ``names`` to ``out/<name>.db`` (a new folder)."""
    out.mkdir()
    destinations = [arg for n in names for arg in ("--to", f"{n}={out / f'{n}.db'}")]
    restored = txbackup("restore", "-c", str(config), set_id, *destinations, env=env)
    assert restored.returncode == 0, restored.stderr
