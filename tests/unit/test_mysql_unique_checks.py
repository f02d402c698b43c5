"""Data parts are sent to the client with unique checks on, whenever they were written."""

from __future__ import annotations

from txbackup.targets.mysql.parts import unique_checks_on
from txbackup.targets.mysql.script import ScriptGuard

OLD = (
    b"-- txbackup dump of database `d`, rows of table `t` (one consistent snapshot)\n"
    b"-- load with: mariadb --default-character-set=utf8mb4 DATABASE < this-file\n"
    b"SET NAMES utf8mb4;\nSET FOREIGN_KEY_CHECKS=0;\nSET UNIQUE_CHECKS=0;\nSET SQL_NOTES=0;\n\n"
    b"-- rows of `t`\n"
    b"INSERT INTO `t` VALUES (1,'a\n"
    b"SET UNIQUE_CHECKS=0;\n"  # a line of a value, not of the header: sent as it is
    b"'),(2,'b');\n"
    b"SET UNIQUE_CHECKS=0;\n"  # a statement after the rows is not the header's either
    b"SET FOREIGN_KEY_CHECKS=1;\nSET UNIQUE_CHECKS=1;\n"
)


def pieces(data: bytes, size: int) -> list[bytes]:
    """``data`` as the guard hands it on: cut at line ends, from reads of ``size`` bytes."""
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    return list(ScriptGuard("t", server_version=101100, mariadb=True).checked(chunks))


def test_the_header_line_only_is_turned_on_at_every_cut():
    want = OLD.replace(b"SET UNIQUE_CHECKS=0;", b"SET UNIQUE_CHECKS=1;", 1)
    assert want.count(b"SET UNIQUE_CHECKS=0;") == 2
    for size in range(1, len(OLD) + 1):
        assert b"".join(unique_checks_on(pieces(OLD, size))) == want, size


def test_a_part_without_the_line_passes_unchanged():
    new = OLD.replace(b"SET UNIQUE_CHECKS=0;\nSET SQL", b"-- unique checks stay on\nSET SQL", 1)
    for size in (1, 7, 64, len(new)):
        assert b"".join(unique_checks_on(pieces(new, size))) == new
    assert list(unique_checks_on([])) == []
