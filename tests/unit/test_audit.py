"""The audit's checks on ScalarDB-shaped SQLite stores (tests/scalardb_shaped.py) left in
every state a copy can catch them in: one test per check, each also showing the same
data without the fault passes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.scalardb_shaped import (
    ABORTED,
    COMMITTED,
    ShapedBank,
    Write,
    connect,
    copy_file,
    create_store,
    now_ms,
)
from txbackup.engine.audit import (
    AuditOptions,
    Auditor,
    AuditReport,
    Coordinator,
    audit_tables,
    is_group_id,
)
from txbackup.targets.audit_tables import sqlite_tables


@pytest.fixture
def bank(tmp_path: Path) -> ShapedBank:
    paths = [tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"]
    create_store(paths[0], "bank_a", 10)
    create_store(paths[1], "bank_b", 10)
    create_store(paths[2], "other", 1, coordinator=True)
    bank = ShapedBank(paths[:2], ["bank_a", "bank_b"], paths[2])
    for namespace in ("bank_a", "bank_b", "other"):
        bank.decide(f"setup-{namespace}")  # the setup transactions committed too
    return bank


def files(tmp_path: Path) -> list[Path]:
    return [tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"]


def audit(paths: list[Path], **options: object) -> AuditReport:
    with contextlib.ExitStack() as stack:
        tables = []
        for p in paths:
            tables += stack.enter_context(sqlite_tables(p.stem, str(p)))
        return audit_tables(Auditor("test", AuditOptions(**options)), tables)  # type: ignore[arg-type]


def checks(report: AuditReport) -> dict[str, int]:
    return report.counts()


def test_consistent_stores_are_clean(bank: ShapedBank, tmp_path: Path) -> None:
    for i in range(5):
        bank.transfer((0, i), (1, i), 10)
    report = audit(files(tmp_path))
    assert report.clean, [f.line() for f in report.findings]
    assert report.findings == []
    assert report.records == 21 and report.coordinator_rows == 8
    assert sorted(report.tables) == ["a:bank_a.accounts", "b:bank_b.accounts", "c:coordinator.state",
                                     "c:other.accounts"]  # fmt: skip


def test_coordinator_copied_before_a_commit_is_torn(bank: ShapedBank, tmp_path: Path) -> None:
    bank.transfer((0, 1), (1, 1), 10)
    copy_file(tmp_path / "c.db", tmp_path / "c-copy.db")  # the naive copy starts with the coordinator
    tx = bank.transfer((0, 2), (1, 3), 25)
    report = audit([tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c-copy.db"])
    assert not report.clean
    torn = [f for f in report.findings if f.check == "committed-without-coordinator"]
    assert {(f.target, f.table, f.key["id"], f.tx_id) for f in torn} == {
        ("a", "bank_a.accounts", 2, tx),
        ("b", "bank_b.accounts", 3, tx),
    }
    assert all(f.level == "torn" and f.exact for f in torn)
    # the live coordinator has the row: the same stores are consistent
    assert audit(files(tmp_path)).clean


def test_prepared_in_one_store_committed_in_another_is_split(bank: ShapedBank, tmp_path: Path) -> None:
    tx = "tx-split"
    writes = [Write(0, 4, -5), Write(1, 4, 5)]
    bank.prepare(tx, writes)
    copy_file(tmp_path / "a.db", tmp_path / "a-copy.db")  # A copied while PREPARED
    copy_file(tmp_path / "c.db", tmp_path / "c-copy.db")  # coordinator copied before the decision
    bank.decide(tx)
    bank.commit_records(tx, writes)  # B copied after the commit (the live file)
    report = audit(
        [tmp_path / "a-copy.db", tmp_path / "b.db", tmp_path / "c-copy.db"], now_ms=now_ms() + 60_000
    )
    counts = checks(report)
    assert counts == {"prepared": 1, "split-transaction": 1, "committed-without-coordinator": 1}, counts
    split = next(f for f in report.findings if f.check == "split-transaction")
    assert (split.target, split.key, split.tx_id, split.state) == ("a-copy", {"id": 4}, tx, "PREPARED")
    prepared = next(f for f in report.findings if f.check == "prepared")
    assert "rolls it back" in prepared.verdict and "expired" in prepared.verdict


def test_prepared_records_resolve_like_lazy_recovery(bank: ShapedBank, tmp_path: Path) -> None:
    forward, back, gone, young = "tx-forward", "tx-back", "tx-gone", "tx-young"
    bank.prepare(forward, [Write(0, 1, -1), Write(1, 1, 1)])
    bank.decide(forward)  # coordinator COMMITTED, records not yet committed
    bank.prepare(back, [Write(0, 2, -1), Write(1, 2, 1)])
    bank.decide(back, ABORTED)
    bank.prepare(gone, [Write(0, 3, -1)])
    bank.prepare(young, [Write(1, 5, 1)], delete=True)
    old = now_ms() - 20_000  # "gone" prepared 20 s ago: expired (RecoveryHandler: 15 s)
    bank.dbs[0].execute('UPDATE "bank_a$accounts" SET tx_prepared_at = ? WHERE tx_id = ?', (old, gone))
    report = audit(files(tmp_path))
    verdicts = {(f.tx_id, f.target): (f.check, f.level, f.verdict) for f in report.findings}
    assert len(verdicts) == 6, verdicts
    assert all("rolls it forward" in verdicts[(forward, s)][2] for s in "ab")
    assert all("rolls it back: the coordinator says ABORTED" in verdicts[(back, s)][2] for s in "ab")
    assert "expired" in verdicts[(gone, "a")][2] and verdicts[(gone, "a")][1] == "recovery"
    assert (
        verdicts[(young, "b")][:2] == ("deleted", "warning")
        and "not yet expired" in verdicts[(young, "b")][2]
    )
    # consistent recoveries are allowed; the pending one (not yet expired) is a warning
    assert not report.clean
    bank.dbs[1].execute('UPDATE "bank_b$accounts" SET tx_prepared_at = ? WHERE tx_id = ?', (old, young))
    report = audit(files(tmp_path))
    assert report.clean and len(report.findings) == 6
    assert not audit(files(tmp_path), strict=True).clean


def test_committed_record_of_an_aborted_transaction(bank: ShapedBank, tmp_path: Path) -> None:
    tx = "tx-aborted"
    writes = [Write(0, 6, -1)]
    bank.prepare(tx, writes)
    bank.decide(tx, ABORTED)
    bank.commit_records(tx, writes)  # never done by ScalarDB: a set mixing two points
    report = audit(files(tmp_path))
    assert checks(report) == {"committed-but-aborted": 1}
    assert not report.clean


def test_group_commit_ids_resolve_through_the_parent(bank: ShapedBank, tmp_path: Path) -> None:
    parent = "P" * 24
    grouped, delayed, orphan = f"{parent}$child-1", f"{parent}$child-2", f"{parent}$child-3"
    for tx, account in ((grouped, 1), (delayed, 2), (orphan, 3)):
        bank.prepare(tx, [Write(0, account, -1)])
    bank.decide(parent, COMMITTED, children="child-0,child-1")  # a normal group with child-1
    bank.decide(delayed, COMMITTED)  # a delayed group: its own full id
    bank.commit_records(grouped, [Write(0, 1, -1)])
    bank.commit_records(delayed, [Write(0, 2, -1)])
    bank.commit_records(orphan, [Write(0, 3, -1)])  # committed, but no group lists it
    report = audit(files(tmp_path))
    assert [(f.check, f.tx_id) for f in report.findings] == [("committed-without-coordinator", orphan)]


def test_group_id_shape() -> None:
    assert is_group_id("A" * 24 + "$x") and not is_group_id("A" * 23 + "$x") and not is_group_id("A" * 24)
    coordinator = Coordinator()
    coordinator.add("A" * 24, COMMITTED, frozenset({"x"}), "t")
    assert coordinator.state_of("A" * 24 + "$x") == ("A" * 24, COMMITTED)
    assert coordinator.state_of("A" * 24 + "$y") is None
    coordinator.add("A" * 24 + "$y", ABORTED, frozenset(), "t")
    assert coordinator.state_of("A" * 24 + "$y") == ("A" * 24 + "$y", ABORTED)
    coordinator.add("A" * 24, ABORTED, frozenset(), "u")  # the same row, another state: a conflict
    assert len(coordinator.conflicts) == 1 and coordinator.state_of("A" * 24 + "$x") == ("A" * 24, COMMITTED)


def test_newer_than_the_restore_point(bank: ShapedBank, tmp_path: Path) -> None:
    end = now_ms()
    tx = bank.transfer((0, 7), (1, 7), 3)
    bank.dbs[0].execute('UPDATE "bank_a$accounts" SET tx_committed_at = ? WHERE tx_id = ?', (end + 5000, tx))
    report = audit(files(tmp_path), window_end_ms=end, clock_skew_ms=1000)
    newer = [f for f in report.findings if f.check == "newer-than-restore-point"]
    assert {f.target for f in newer} == {"a"} and all(not f.exact for f in newer)
    assert not report.clean
    assert audit(files(tmp_path), window_end_ms=end + 10_000).clean


def test_missing_coordinator_and_system_namespace(tmp_path: Path) -> None:
    create_store(tmp_path / "a.db", "bank_a", 3)
    report = audit([tmp_path / "a.db"])
    assert checks(report) == {"no-coordinator": 1}
    db = connect(tmp_path / "a.db")
    db.execute('DROP TABLE "scalardb$metadata"')
    db.close()
    assert checks(audit([tmp_path / "a.db"])) == {"no-coordinator": 1, "no-system-namespace": 1}


def test_table_missing_from_the_metadata_and_bad_states(bank: ShapedBank, tmp_path: Path) -> None:
    bank.dbs[0].execute('DELETE FROM "scalardb$metadata"')
    bank.dbs[1].execute('UPDATE "bank_b$accounts" SET tx_state = 7 WHERE id = 0')
    bank.coord.execute("INSERT INTO \"coordinator$state\" VALUES ('tx-x', NULL, 1, 0)")
    report = audit(files(tmp_path))
    assert checks(report) == {"table-not-in-metadata": 1, "bad-state": 2}, checks(report)


def test_records_without_metadata_are_deemed_committed(bank: ShapedBank, tmp_path: Path) -> None:
    bank.dbs[0].execute('UPDATE "bank_a$accounts" SET tx_id = NULL, tx_state = NULL')
    bank.dbs[1].execute('UPDATE "bank_b$accounts" SET tx_id = NULL')  # tx_id alone decides
    assert audit(files(tmp_path)).clean
