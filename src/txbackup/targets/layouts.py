"""The artifact names each target kind writes: its layout, one registration per kind.

A manifest is untrusted input (whoever can write to the storage can rewrite
it, checksums included), and artifact names become storage names and, at
restore, local file names. So before anything is read or written the engine
refuses a manifest whose target kind is unknown or one of whose artifact names
does not fit the layout of its kind (``txbackup.engine.manifest``); the targets
then map names to paths through ``txbackup.safepaths`` as a second line.

The declarations live here rather than in each kind's module so that reading
a manifest (``verify``, ``show``, ``list --rebuild``) needs no database driver;
each kind's module documents the same names, and the tests check that what a
target writes fits its layout. A new kind adds one ``register`` call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ArtifactLayout:
    """The artifact names one target kind can produce (each pattern matches a whole name)."""

    kind: str
    expected: str  # the names, for messages: "<database>.sql"
    patterns: tuple[re.Pattern[str], ...]

    def fits(self, name: str) -> bool:
        return any(p.fullmatch(name) for p in self.patterns)


LAYOUTS: dict[str, ArtifactLayout] = {}
"""kind -> its layout: the target kinds a manifest may name."""


def register(kind: str, expected: str, *patterns: str) -> ArtifactLayout:
    """Declare the artifact names of ``kind`` (regular expressions, whole-name match)."""
    layout = ArtifactLayout(kind, expected, tuple(re.compile(p) for p in patterns))
    LAYOUTS[kind] = layout
    return layout


# A segment: anything the generic checks of safepaths let through, but no '/'.
_SEGMENT = r"[^/]+"
# What pg_dump -Fd writes: toc.dat, one <dump id>.dat per table, large objects
# (blob_<oid>.dat with blobs.toc, or blobs_<dump id>.toc from PostgreSQL 17);
# a compressed dump adds .gz, .lz4 or .zst.
_PG_DIR_FILE = r"(?:toc\.dat|blobs(?:_[0-9]+)?\.toc|(?:blob_)?[0-9]+\.dat(?:\.gz|\.lz4|\.zst)?)"

register("sqlite", "<file stem>.sqlite", rf"{_SEGMENT}\.sqlite")
register(
    "postgres",
    "<database>.dump or <database>.dir/<pg_dump directory-format file>",
    rf"{_SEGMENT}\.dump",
    rf"{_SEGMENT}\.dir/{_PG_DIR_FILE}",
)
# jobs = 1: one script per database; jobs > 1: per database a folder of scripts restored
# in name order (0-schema, the 1-data parts in any order or in parallel, 2-triggers-routines)
_MYSQL_PART = r"(?:0-schema|1-data-[0-9]{5,9}|2-triggers-routines)\.sql"
register(
    "mysql",
    "<database>.sql or <database>.parts/{0-schema,1-data-NNNNN,2-triggers-routines}.sql",
    rf"{_SEGMENT}\.sql",
    rf"{_SEGMENT}\.parts/{_MYSQL_PART}",
)
register(
    "cassandra",
    "nodes/<node address>.json, schema.json or schema.cql",
    r"nodes/[0-9A-Za-z_.:%-]+\.json",
    r"schema\.json",
    r"schema\.cql",
)
register("dynamodb", "tables.json", r"tables\.json")
register("cosmos", "account.json", r"account\.json")
register("rds", "rds.json", r"rds\.json")
register("azure-postgres", "server.json", r"server\.json")
register("azure-mysql", "server.json", r"server\.json")


_MYSQL_NAME = re.compile(rf"({_SEGMENT})\.sql|({_SEGMENT})\.parts/({_MYSQL_PART})")


def mysql_artifact(name: str) -> tuple[str, str | None] | None:
    """A mysql artifact name -> (database, part): ``part`` is None for ``<db>.sql`` and the
    file name (``0-schema.sql``...) for ``<db>.parts/...``; None for a name of neither form."""
    found = _MYSQL_NAME.fullmatch(name)
    if found is None:
        return None
    if found.group(1) is not None:
        return found.group(1), None
    return found.group(2), found.group(3)
