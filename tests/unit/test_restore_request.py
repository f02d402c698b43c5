"""What `txbackup restore` is asked, checked against the cluster file alone (no storage,
no server): --rename-db parsing and resolution, renames only for kinds with databases,
each kind's --to syntax, and how a destination is named in messages and in --jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from txbackup.cli.restore import job_targets, parse_renames, resolve_renames
from txbackup.config import Applications, ClusterConfig, build_target
from txbackup.engine.restore import check_request, describe_destination
from txbackup.errors import UsageError
from txbackup.jobs import JobRow
from txbackup.targets.base import Target


def _targets() -> list[Target]:
    confs: list[dict[str, Any]] = [
        {"name": "pg", "kind": "postgres", "databases": ["ledger", "shared"]},
        {"name": "my", "kind": "mysql", "databases": ["orders", "shared"], "coordinator_database": "coord"},
        {"name": "file", "kind": "sqlite", "path": "/tmp/x.db"},
        {"name": "ddb", "kind": "dynamodb", "region": "r", "tables": ["a.t"]},
        {"name": "cos", "kind": "cosmos", "subscription_id": "s", "resource_group": "g", "account": "acct"},
    ]
    return [build_target(c, i) for i, c in enumerate(confs)]


def _config(targets: list[Target]) -> ClusterConfig:
    return ClusterConfig(Path("/tmp/c.toml"), Applications(), targets, "/tmp/s", "/tmp/catalog.db")


def test_rename_flags_are_parsed_and_resolved() -> None:
    targets = _targets()
    config = _config(targets)
    names = [t.name for t in targets]
    assert parse_renames(["orders=o2", "pg:shared=s2", "a=b=c"]) == [
        (None, "orders", "o2"),
        ("pg", "shared", "s2"),
        (None, "a=b", "c"),  # the last '=' splits (a new name never holds one)
    ]
    flags = parse_renames(["orders=o2", "coord=c2", "ledger=l2", "pg:shared=s2"])
    assert resolve_renames(config, names, flags) == {
        "my": {"orders": "o2", "coord": "c2"},
        "pg": {"ledger": "l2", "shared": "s2"},
    }
    for items, message in [
        (["shared=x"], "targets pg, my all have it; say which: TARGET:OLD=NEW"),
        (["nope=x"], "no postgres or mysql target being restored has database 'nope'"),
        (["orders=x", "my:orders=y"], "given twice"),
    ]:
        with pytest.raises(UsageError, match=message):
            resolve_renames(config, names, parse_renames(items))
    # only the targets being restored count: with --target my, "shared" is my's
    assert resolve_renames(config, ["my"], parse_renames(["shared=x"])) == {"my": {"shared": "x"}}
    for item in ["x", "=x", "x=", "pg:=x", "../evil:a=b"]:
        with pytest.raises(UsageError, match="--rename-db"):
            parse_renames([item])


def test_the_request_is_checked_against_the_cluster_file() -> None:
    targets = _targets()
    check_request(targets, [], {"pg": "postgresql://u@h/db", "ddb": "suffix:-r", "cos": "acct-copy"}, {}, {})
    check_request(targets, [], {}, {}, {"pg": {"ledger": "l2"}, "my": {"coord": "c2"}})
    cases: list[tuple[tuple[Any, ...], str | None]] = [
        (([], {"ddb": "elsewhere"}, {}, {}), "expected suffix:TEXT or prefix:TEXT"),
        (([], {"cos": "Not_An_Account"}, {}, {}), "not a valid Cosmos DB account name"),
        (([], {"my": "postgresql://h/db"}, {}, {}), "destination DSN must look like mysql://"),
        (([], {"pg": "host=h bogus=1"}, {}, {}), "bad destination DSN"),
        (([], {"pg": {"dsn": "postgresql://h/db", "colour": "red"}}, {}, {}), "unknown restore destination"),
        (([], {}, {}, {"file": {"a": "b"}}), "target 'file' \\(sqlite\\): it has no databases to rename"),
        (([], {}, {}, {"ddb": {"a": "b"}}), "it has no databases to rename"),
        (([], {}, {}, {"pg": {"ledger": "postgres"}}), "a system database"),
        (([], {}, {}, {"pg": {"ledger": "shared"}}), "would both be restored into 'shared'"),
        (([], {}, {}, {"my": {"orders": "x", "coord": "x"}}), "would both be restored into 'x'"),
        (([], {}, {}, {"my": {"ghost": "x"}}), "cannot rename database 'ghost': not one of the target's"),
        (([], {"pg": {"dsn": "postgresql://h/other"}}, {}, {"pg": {"ledger": "l2"}}), None),
        ((["pg"], {"my": "mysql://u@h/db"}, {}, {}), "'my': not a target being restored"),
        ((["nope"], {}, {}, {}), "--target 'nope': no target named so in the cluster file"),
        (([], {}, {"ghost": {"password_env": "X"}}, {}), "'ghost': no target named so in the cluster file"),
    ]
    for args, message in cases:
        if message is None:
            check_request(targets, *args)
            continue
        with pytest.raises(UsageError, match=message):
            check_request(targets, *args)
    # a single-database destination name and a rename of that database must agree
    single = [build_target({"name": "one", "kind": "postgres", "databases": ["ledger"]}, 0)]
    check_request(single, [], {"one": "postgresql://h/copy"}, {}, {"one": {"ledger": "copy"}})
    with pytest.raises(UsageError, match="given two destination names"):
        check_request(single, [], {"one": "postgresql://h/copy"}, {}, {"one": {"ledger": "other"}})


def test_a_destination_as_messages_and_jobs_show_it() -> None:
    assert describe_destination(None, None) == "its own databases"
    assert describe_destination(None, {"a": "b"}) == "its own server (renaming a->b)"
    assert describe_destination("mysql://u@h/db", None) == "mysql://u@h/db"
    shown = describe_destination({"host": "h", "port": "5433"}, {"a": "b"})
    assert shown == "host=h port=5433 (renaming a->b)"
    assert "\n" not in describe_destination("x\ny", None)
    params = {
        "only": [],
        "targets": ["pg", "my"],
        "destinations": {"pg": "postgresql://u@h/db"},
        "renames": {"my": {"orders": "o2"}},
    }
    row = JobRow("restore-1", "set-1", params, "failed", "boom", "t0", "t1")
    assert job_targets(row, {"pg": ["restored"], "my": ["database/orders"]}) == [
        {"name": "pg", "destination": "postgresql://u@h/db", "renames": {}, "state": "restored"},
        {"name": "my", "destination": "its own server (renaming orders->o2)", "renames": {"orders": "o2"},
         "state": "partly restored"},
    ]  # fmt: skip
    # a job of an older version (no "targets"): what it was given; malformed params show nothing
    old = JobRow("restore-0", "set-0", {"only": ["pg"], "destinations": "bad"}, "complete", None, "t", "t")
    assert job_targets(old, {}) == [
        {"name": "pg", "destination": "its own databases", "renames": {}, "state": "not restored"}
    ]
    assert job_targets(JobRow("r", "s", {"targets": "x"}, "failed", None, "t", "t"), {}) == []
