"""A strict reader of Java ``.properties`` files (what ScalarDB reads its configuration from).

The grammar is ``java.util.Properties.load``'s (JDK documentation of ``Properties.load(Reader)``):

- a *natural line* ends at ``\\n``, ``\\r`` or ``\\r\\n``; a line whose first non-blank
  character is ``#`` or ``!`` is a comment, a blank line is skipped (blanks are space, tab
  and form feed);
- a line ending in an odd number of backslashes continues on the next one, whose leading
  blanks are dropped (a comment line never continues);
- the key ends at the first unescaped ``=``, ``:`` or blank; blanks, then at most one ``=``
  or ``:``, then blanks separate it from the value, which is the rest of the line;
- escapes: ``\\t \\n \\r \\f``, ``\\uXXXX`` (exactly four hex digits, else an error, as in
  Java), and a backslash before any other character stands for that character;
- a key given twice keeps its last value (Java's rule); :class:`Properties` remembers the
  repeated keys so a caller can warn.

The file is untrusted input: it is read up to :data:`MAX_BYTES` and :data:`MAX_ENTRIES`, and
every error is one line naming the file and the line. Java reads a ``.properties`` stream as
ISO-8859-1; ScalarDB opens its file as a stream, so bytes that are not UTF-8 are read that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from txbackup.errors import UsageError
from txbackup.safepaths import read_small_file

MAX_BYTES = 1 << 20
"""A configuration file larger than this is not one."""
MAX_ENTRIES = 10_000

_BLANKS = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


@dataclass
class Properties:
    """The key/value pairs of a file, with the line each one came from."""

    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key, default)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, logical line) for every line holding a key."""
    natural = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(natural):
        number, line = i + 1, natural[i].lstrip(_BLANKS)
        i += 1
        if not line or line[0] in "#!":
            continue
        parts = []
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 0:
                parts.append(line)
                break
            parts.append(line[:-1])  # the continuation backslash
            if i >= len(natural):
                break  # a backslash at the very end of the file is dropped, as in Java
            line = natural[i].lstrip(_BLANKS)
            i += 1
        out.append((number, "".join(parts)))
    return out


def _unescape(text: str, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(text):
            break  # a lone trailing backslash (already consumed as continuation) stands for nothing
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise UsageError(f"{where}: malformed \\uxxxx escape")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _split(line: str) -> tuple[str, str]:
    """(raw key, raw value) of a logical line (escapes still in place)."""
    i, escaped = 0, False
    while i < len(line):
        char = line[i]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "=:" or char in _BLANKS:
            break
        i += 1
    key, rest = line[:i], line[i:].lstrip(_BLANKS)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_BLANKS)
    return key, rest


def parse(text: str, *, where: str = "properties") -> Properties:
    """The properties of ``text`` (``where`` names its source in messages)."""
    props = Properties()
    for number, line in _logical_lines(text):
        culprit = f"{where} line {number}"
        raw_key, raw_value = _split(line)
        key, value = _unescape(raw_key, culprit), _unescape(raw_value, culprit)
        if key in props.values:
            props.repeated.append(key)
        elif len(props.values) >= MAX_ENTRIES:
            raise UsageError(f"{where}: more than {MAX_ENTRIES} properties, not a configuration file")
        props.values[key] = value
        props.lines[key] = number
    return props


def load(path: str | Path) -> Properties:
    """The properties of the file ``path``; every failure is one line naming it."""
    where = f"properties file {path}"
    data = read_small_file(path, where, MAX_BYTES, "configuration file")
    if b"\x00" in data:
        raise UsageError(f"{where}: holds NUL bytes, not a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("iso-8859-1")  # Properties.load(InputStream)'s encoding
    return parse(text, where=where)
