"""How the mysql target renders rows (``row_expression``) and cuts them into chunks
(``_by_key``), on a real MariaDB: every value comes back exactly, whatever its column's
nullability, character set or collation, and whatever the integer keys' spread."""

from __future__ import annotations

import re

import pymysql
import pymysql.cursors
import pytest

from tests.integration.test_mysql_target import contents, make_target, unique
from tests.targets_support import DirReader, backup
from txbackup.targets.mysql import parts as mysql_parts
from txbackup.targets.mysql import target as mysql_target

pytestmark = pytest.mark.mariadb

# every kind of column NOT NULL (rendered without IFNULL, quotes as CONCAT arguments) and
# nullable; text in the table's utf8mb4 collation, in others, and in other character sets
VALS = """
CREATE TABLE vals (
    id int PRIMARY KEY,
    t varchar(300) NOT NULL,
    tn varchar(300),
    uc text COLLATE utf8mb4_unicode_ci NOT NULL,
    ub varchar(50) COLLATE utf8mb4_bin NOT NULL,
    lat varchar(50) CHARACTER SET latin1 NOT NULL,
    latn varchar(50) CHARACTER SET latin1,
    u3 varchar(50) CHARACTER SET utf8mb3 NOT NULL,
    asc_ varchar(20) CHARACTER SET ascii NOT NULL,
    b varbinary(300) NOT NULL,
    bn blob,
    d date NOT NULL,
    dn date,
    dt datetime(6) NOT NULL,
    ts timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    tm time(3) NOT NULL,
    y year NOT NULL,
    dec_ decimal(40, 10) NOT NULL,
    decn decimal(40, 10),
    f double NOT NULL,
    fl float NOT NULL,
    bt bit(8) NOT NULL,
    btn bit(3),
    e enum('a', 'b''c', 'd\\\\e') NOT NULL,
    st set('x', 'y''z') NOT NULL,
    j json NOT NULL,
    g point NOT NULL,
    u bigint unsigned NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
"""

HOSTILE = 'it\'s "q" \\ back\\slash\n\r\ttab \x00 nul \x1a ctrl-z ünï 🙂\n\\! echo pwned\ndelimiter ;;\n*/ --'
ROWS = [
    (1, HOSTILE, HOSTILE, "日本\n'\\\x00", "Bin'\\\n", "café ÿ '\\\x00\n", "é", "✓ 日本 \n'", "a'b\\c\n\r",
     bytes(range(256)), bytes(range(255, -1, -1)), "2024-02-29", "1999-12-31", "1999-12-31 23:59:59.999999",
     "2038-01-19 03:14:07.000001", "-838:59:59.999", 2155, "-123456789012345678901234567890.0123456789",
     "0.0000000001", -1e308, 1.5, 255, 5, "b'c", "x,y'z", '{"k": [1, 2.5, null, "x\\"y\\n"]}', 1, 2**64 - 1),
    (2, "", None, "", "", "", None, "", "", b"", None, "0000-00-00", None, "0000-00-00 00:00:00",
     "1970-01-01 00:00:01", "00:00:00", 1901, "0", None, 0.0, 0.0, 0, None, "d\\e", "", "{}", 2, 0),
]  # fmt: skip
INSERT = (
    "INSERT INTO vals (id, t, tn, uc, ub, lat, latn, u3, asc_, b, bn, d, dn, dt, ts, tm, y, dec_, decn,"
    " f, fl, bt, btn, e, st, j, g, u) VALUES (" + ", ".join(["%s"] * 26) + ", POINT(%s, 7), %s)"
)


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(mysql_parts, "PART_MIN_BYTES", 1)


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_column_kind_round_trips_exactly(
    mariadb_server, mariadb_db, tmp_path, monkeypatch, small_parts, jobs
):
    conn = mariadb_server.connect(mariadb_db)
    with conn.cursor() as cur:
        cur.execute(VALS)
        cur.executemany(INSERT, ROWS)
        # more rows, so that the table is cut into chunks (and, with jobs = 2, in key ranges)
        cur.execute(
            "INSERT INTO vals (id, t, uc, ub, lat, u3, asc_, b, d, dt, tm, y, dec_, f, fl, bt, e,"
            " st, j, g, u) SELECT seq + 2, CONCAT('x\\n', seq, '\\0'), 'u', 'b', 'l', '3', 'a',"
            " UNHEX(MD5(seq)), '2020-01-01', '2020-01-01', '01:02:03', 2000, seq / 7, seq / 3, seq,"
            " seq % 256, 'a', 'x', '[]', POINT(seq, 1), seq"
            " FROM seq_1_to_300"
        )
        # latin1 the only text: nothing else in the row makes the server convert it
        cur.execute("CREATE TABLE lat (id int PRIMARY KEY, l varchar(20) CHARACTER SET latin1 NOT NULL)")
        cur.execute("INSERT INTO lat VALUES (1, 'café ÿ'), (2, '\\'\n')")
    conn.close()
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, batch_bytes=2048, jobs=jobs)
    out = tmp_path / "out"
    backup(target, out)
    dumped = b"".join(path.read_bytes() for path in out.rglob("*.sql"))
    assert dumped.count(b"INSERT INTO `vals`") > 5
    assert b"\\! echo pwned" in dumped and b"\n\\! echo" not in dumped  # values never span lines
    dest = unique("render")
    target.restore(DirReader(out), {"database": dest}, force=False)
    assert contents(mariadb_server, dest) == expected
    conn = mariadb_server.connect(dest)
    with conn.cursor() as cur:  # the bytes, not only what the driver decodes
        cur.execute("SELECT HEX(t), HEX(uc), HEX(lat), HEX(u3), HEX(b), ST_AsText(g) FROM vals ORDER BY id")
        restored = cur.fetchall()
    conn.close()
    conn = mariadb_server.connect(mariadb_db)
    with conn.cursor() as cur:
        cur.execute("SELECT HEX(t), HEX(uc), HEX(lat), HEX(u3), HEX(b), ST_AsText(g) FROM vals ORDER BY id")
        assert cur.fetchall() == restored
    conn.close()


def test_integer_keys_in_computed_ranges(mariadb_server, mariadb_db, tmp_path, monkeypatch, small_parts):
    """Integer keys of every width, at their extremes, sparse and dense, in chunks computed from
    the keys (no walk query); after a gap followed by dense rows (gap, and signed's jump from
    its lowest keys to the dense ones) the first wrong guess sends the rest to the walk."""
    conn = mariadb_server.connect(mariadb_db)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE signed (k bigint PRIMARY KEY, v varchar(50) NOT NULL)")
        extremes = [-(2**63), -(2**63) + 1, -5, 0, 7, 2**63 - 2, 2**63 - 1]
        cur.executemany("INSERT INTO signed VALUES (%s, %s)", [(k, f"v{k}") for k in extremes])
        cur.execute("INSERT INTO signed SELECT seq, REPEAT('s', seq % 40) FROM seq_1000_to_2500")
        cur.execute("CREATE TABLE uns (k bigint unsigned PRIMARY KEY, v blob)")
        cur.executemany(
            "INSERT INTO uns VALUES (%s, %s)", [(k, None) for k in (0, 1, 2**63, 2**64 - 2, 2**64 - 1)]
        )
        cur.execute("INSERT INTO uns SELECT seq * 1000003, UNHEX(MD5(seq)) FROM seq_1_to_1500")
        cur.execute("CREATE TABLE tiny (k tinyint PRIMARY KEY, v char(30) NOT NULL)")
        cur.execute("INSERT INTO tiny SELECT CAST(seq AS SIGNED) - 128, REPEAT('t', 30) FROM seq_0_to_255")
        cur.execute("CREATE TABLE mid (k mediumint unsigned PRIMARY KEY)")
        cur.execute("INSERT INTO mid SELECT seq * 4099 FROM seq_0_to_4000")
        cur.execute("CREATE TABLE gap (k int PRIMARY KEY, v varchar(300) NOT NULL)")
        cur.execute("INSERT INTO gap SELECT seq * 1000000, 'sparse' FROM seq_1_to_40")
        cur.execute("INSERT INTO gap SELECT 50000000 + seq, REPEAT('d', 200) FROM seq_1_to_3000")
        cur.execute("CREATE TABLE one (k int PRIMARY KEY)")
        cur.execute("INSERT INTO one VALUES (42)")
        cur.execute("CREATE TABLE none (k int PRIMARY KEY)")
    conn.close()
    expected = contents(mariadb_server, mariadb_db)
    # the server joins at most 8 KB: a chunk spanning the gap's dense rows is cut
    monkeypatch.setattr(mysql_target, "CONCAT_MIN", 8192)
    walked: list[str] = []
    execute = pymysql.cursors.Cursor.execute

    def logged(self, query, args=None):
        if "LIMIT 1 OFFSET" in query:
            walked.append(query)
        return execute(self, query, args)

    monkeypatch.setattr(pymysql.cursors.Cursor, "execute", logged)
    for jobs in (1, 2):
        walked.clear()
        target = make_target(mariadb_server, [mariadb_db], monkeypatch, batch_bytes=1024, jobs=jobs)
        out = tmp_path / f"out{jobs}"
        backup(target, out)
        dumped = b"".join(path.read_bytes() for path in out.rglob("*.sql"))
        assert dumped.count(b"INSERT INTO `uns`") > 10 and dumped.count(b"INSERT INTO `gap`") > 10
        # a gap, then dense keys: the chunk spanning them was cut, the rest walked; the
        # others' chunks were all computed
        assert {re.sub(r".*\.`(\w+)` WHERE.*", r"\1", q) for q in walked} == {"gap", "signed"}
        dest = unique(f"keys{jobs}")
        target.restore(DirReader(out), {"database": dest}, force=False)
        assert contents(mariadb_server, dest) == expected
