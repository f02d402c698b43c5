"""The guard reading a MySQL/MariaDB dump as the client will (the real client's runs are in
tests/integration/test_hostile_names.py)."""

from __future__ import annotations

import pytest

from txbackup.errors import TargetError
from txbackup.targets.mysql.script import ScriptGuard, version_id
from txbackup.targets.mysql.target import comment

HEADER = (
    b"-- txbackup dump of database `d`\n"
    b"SET NAMES utf8mb4;\nSET TIME_ZONE='+00:00';\nSET FOREIGN_KEY_CHECKS=0;\n"
    b"SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO';\n"
)

GOOD = HEADER + (
    b"\n-- table `a\\n\\\\! x`\nDROP TABLE IF EXISTS `a\n\\! x`;\n"
    b"CREATE TABLE `a\n\\! x` (\n  `c;` text COMMENT 'x\\n\\\\! y''z'\n);\n"
    b"INSERT INTO `a\n\\! x` (`c;`) VALUES\n"
    b"('it\\'s \\\\! \\n system ls;'),\n(NULL),\n(\\N),\n('--');\n"
    b"SET SESSION SQL_MODE='NO_BACKSLASH_ESCAPES';\nDELIMITER ;;\n"
    b"CREATE PROCEDURE `p`()\nBEGIN SELECT 'a\\', \"b\\\"; # c'\n"
    b"  /* d' */ SELECT 1; -- e'\nEND ;;\nDELIMITER ;\n"
    b"SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO';\n"
    b"CREATE TABLE t (x int) /*!50100 PARTITION BY HASH (x) */;\n"
    b"SET FOREIGN_KEY_CHECKS=1;\n-- txbackup dump complete\n"
)


def guard() -> ScriptGuard:
    return ScriptGuard('target "t"', server_version=101119, mariadb=True)


def test_a_dump_as_txbackup_writes_it_passes_whole_and_unchanged():
    chunks = [GOOD[i : i + 7] for i in range(0, len(GOOD), 7)]
    assert b"".join(guard().checked(chunks)) == GOOD


@pytest.mark.parametrize(
    ("tail", "what"),
    [
        (b"\\! touch x\n", "\\!"),
        (b"  system touch x\n", "'system'"),
        (b"SELECT 1;\n", "'SELECT"),
        (b"INSERT INTO t VALUES (1); source x\n", "'source'"),
        (b"INSERT INTO t VALUES\n(1) \\! touch x\n;\n", "\\!"),
        (b"INSERT INTO t VALUES ('a') \\. f;\n", "\\."),
        (b"\\r db evil.example\n", "\\r"),
        (b"\\e\n", "\\e"),
        (b"DELIMITER //\n", "DELIMITER"),
        (b"INSERT INTO t VALUES (1); DELIMITER ;;\n", "'DELIMITER'"),
        (b"SET NAMES gbk;\n", "SET"),
        (b"SET @@sql_mode = 2097152;\n", "SET"),
        (b"SET STATEMENT sql_mode='' FOR SELECT 1;\n", "SET"),
        (b"INSERT INTO t VALUES (/*!199999 '*/ 1);\n", "version 199999"),
        (b"INSERT INTO t VALUES (/*M!999999 '*/ 1);\n", "version 999999"),
        (b"INSERT INTO t VALUES (1) --\x01 '\n;\n", "comment"),
        (b"--x\n", "comment"),
        (b"INSERT INTO t VALUES ('\x00');\n", "NUL"),
        (b"CALL p();\n", "'CALL"),
        (b"/*!40101 SET sql_mode='' */;\n", "statement"),
    ],
)
def test_anything_else_is_refused_naming_the_line(tail, what):
    script = HEADER + tail
    with pytest.raises(TargetError) as err:
        guard().check([script])
    message = str(err.value)
    assert message.startswith('target "t": refusing the dump: line ')
    assert what in message, message
    assert "\n" not in message


def test_the_sql_mode_decides_where_strings_end():
    nbe = b"SET SESSION SQL_MODE='NO_BACKSLASH_ESCAPES';\nINSERT INTO t VALUES ('a\\', '\n\\! x\n');\n"
    guard().check([nbe])  # 'a\' ends, the next string holds the lines
    default = nbe.replace(b"NO_BACKSLASH_ESCAPES", b"STRICT_TRANS_TABLES")
    with pytest.raises(TargetError, match=r"line 3 holds the client command \\!"):
        guard().check([default])  # 'a\', ' is one string: \! is outside
    ansi = b"SET SQL_MODE='ANSI';\nINSERT INTO t VALUES (\"a\\\", '\n\\! x\n');\n"
    guard().check([ansi])


def test_a_backslash_in_a_string_before_the_sql_mode_is_known_is_refused():
    with pytest.raises(TargetError, match="before the dump sets its SQL_MODE"):
        guard().check([b"SET TIME_ZONE='+00:00';\nINSERT INTO t VALUES ('\\'');\n"])


def test_executable_comments_only_for_a_server_that_runs_them():
    script = HEADER + b"CREATE TABLE t (x int) /*M!100500 COMMENT 'x' */;\n"
    guard().check([script])
    mysql = ScriptGuard("t", server_version=80036, mariadb=False)
    with pytest.raises(TargetError, match="MariaDB-only"):
        mysql.check([script])


def test_an_overlong_line_is_refused():
    with pytest.raises(TargetError, match="longer than"):
        for _ in guard().checked(iter(lambda: b"x" * (64 << 20), b"")):
            pass


def test_version_id():
    assert version_id("10.11.19-MariaDB-0+deb12u1") == 101119
    assert version_id("8.0.36") == 80036
    assert version_id("garbage") == 0


@pytest.mark.parametrize(
    "name", ["a\n\\! touch x", "a\r\\! x", "a\u2028b", "*/ x", "a\\", "é日本🙂", "\x1b[31m"]
)
def test_comment_stays_on_one_line(name):
    text = comment(f"-- table `{name}`")
    assert "\n" not in text and "\r" not in text and "*/" not in text
    assert text.isprintable()
    assert "é日本🙂" in comment("é日本🙂")


_PIECES = [
    b"(1,'a')", b",", b"\n", b"\n", b"\n", b"'", b'"', b"`", b"\\", b"\\'", b"\\\n", b";", b"--", b"-- x",
    b"#", b"/*", b"*/", b"/*!40101 ", b"-", b"/", b"*", b"\x00", b"\r", b"x", b"'a\\nb'", b"\\!",
    b"INSERT INTO t VALUES ", b"SET SQL_MODE='NO_BACKSLASH_ESCAPES';\n", b"SET SQL_MODE='ANSI';\n",
    b"DELIMITER ;;\n", b"DELIMITER ;\n", b"system ", b"(X'00FF',NULL)", b"\xc3\xa9",
]  # fmt: skip


def _reading(script: bytes, fast: bool, size: int) -> tuple[bytes, str]:
    """What a guard lets through of ``script`` fed in ``size``-byte chunks, and its refusal."""
    reader = guard()
    reader.fast = fast
    passed: list[bytes] = []
    try:
        for piece in reader.checked(script[i : i + size] for i in range(0, len(script), size)):
            passed.append(piece)
    except TargetError as exc:
        return b"".join(passed), str(exc)
    return b"".join(passed), ""


def test_plain_lines_read_in_one_step_are_read_as_line_by_line():
    """The fast path (runs of plain lines at once) decides exactly as the line-by-line reading,
    on random scripts mixing strings, escapes, comments, delimiters, NULs and SQL modes."""
    import random

    rng = random.Random(11)
    refused = passed = 0
    for _ in range(3000):
        body = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 60)))
        script = HEADER + b"INSERT INTO t VALUES\n" + body + b"\n"
        size = rng.choice([1, 7, 64, 4096])
        fast, slow = _reading(script, True, size), _reading(script, False, size)
        assert fast == slow, script
        refused, passed = refused + bool(fast[1]), passed + (not fast[1])
    assert refused > 300 and passed > 300  # both outcomes are exercised


def test_the_fast_path_counts_lines_for_the_culprit():
    rows = b"".join(b"('row %d'),\n" % i for i in range(1000))
    script = HEADER + b"INSERT INTO t VALUES\n" + rows + b"(1) \\! touch x\n;\n"
    # 5 header lines, the INSERT, 1000 rows: the 1007th line
    assert _reading(script, True, 4096)[1] == _reading(script, False, 4096)[1]
    with pytest.raises(TargetError, match=r"line 1007 holds the client command \\!"):
        guard().check([script])
