"""What the mariadb/mysql command-line client would do with a dump, decided before it does.

The client reads a script line by line and runs some of it itself instead of
sending it to the server: ``\\! cmd`` or ``system cmd`` (a shell command),
``\\.``/``source`` (another file), ``\\T``/``tee`` (writes a file), ``\\e`` (runs
``$EDITOR``), ``\\r db host`` (reconnects elsewhere, with our password)... It
recognises them only outside quoted strings and comments, by its own reading
of the script (``add_line`` in the client's ``mysql.cc``), which depends on the
session's sql_mode (``NO_BACKSLASH_ESCAPES``, ``ANSI_QUOTES``: the server tells
the client after every statement). ``--sandbox`` (MariaDB 10.5.25, 10.6.18,
10.11.8 and later) refuses the commands that touch files, not ``\\r`` or ``\\e``.

:class:`ScriptGuard` reads a dump the way the client will and refuses, naming
the line:

- any client command: a backslash command outside strings (``\\N``, a NULL,
  aside), a command name as the first word of a statement; only ``DELIMITER ;;``
  and ``DELIMITER ;`` alone on their line pass;
- any statement a txbackup dump does not hold: the first word must be one of
  SET, INSERT, CREATE, DROP, ALTER, DO, and a SET one of the few the dump writes.
  So the only statements that can change how the client reads what follows are
  ``SET [SESSION] SQL_MODE='...'``, which the guard reads too (and the
  connection's character set stays utf8mb4, where no byte of a multi-byte
  character is a quote or a backslash);
- a backslash inside a quoted string before the first ``SET SQL_MODE`` (the
  client's reading would depend on the server's default sql_mode);
- an executable comment (``/*!NNNNN``, ``/*M!``) the destination server would
  skip: the server would then read the rest of the line differently from the
  client (a quote inside it opens a string for one of them only);
- a comment the server and the client would not end at the same place (``--``
  followed by a control character: a comment for the server only);
- a NUL byte (the client ends a line there too), and a line longer than the
  client's line buffer (it would be cut in two, the rest read as a new line).

It errs on the side of refusing: a dump txbackup wrote always passes, a
tampered one may be refused although harmless.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from txbackup.errors import TargetError

COMMANDS = frozenset(
    {
        "?", "charset", "clear", "connect", "delimiter", "edit", "ego", "exit", "go", "help",
        "nopager", "notee", "nowarning", "pager", "print", "prompt", "quit", "rehash",
        "sandbox", "source", "status", "system", "tee", "use", "warnings",
        # MySQL's client
        "query_attributes", "resetconnection", "ssl_session_data_print",
    }
)  # fmt: skip
"""The client's named commands (``help`` of MariaDB 10.11 and MySQL 8 clients)."""

MAX_LINE = 1 << 29
"""Well below the client's line buffer (1 GiB), past which it cuts a line in two and reads
the rest as a new line."""

_STATEMENTS = frozenset({"SET", "INSERT", "CREATE", "DROP", "ALTER", "DO"})
_SETS = re.compile(
    rb"(?i)SET\s+(?:NAMES\s+utf8mb4|TIME_ZONE\s*=\s*'\+00:00'"
    rb"|(?:FOREIGN_KEY_CHECKS|UNIQUE_CHECKS|SQL_NOTES)\s*=\s*[01]"
    rb"|(?:SESSION\s+)?SQL_MODE\s*=\s*'([A-Za-z0-9_,]*)')\s*"
)
_ANSI_QUOTES = frozenset({"ANSI_QUOTES", "ANSI", "DB2", "MAXDB", "MSSQL", "ORACLE", "POSTGRESQL"})
_DELIMITERS = (b";", b";;")
_DELIMITER_LINE = re.compile(rb"(?i)[ \t]*delimiter[ \t]+(\S+)[ \t\r]*")
_WORD = re.compile(rb"[A-Za-z_?]+")
_SPACE = re.compile(rb"[ \t\r\f\v]*")
_IDENT_CHAR = re.compile(rb"[A-Za-z0-9_$]")
_EXECUTABLE = re.compile(rb"(M?)!([0-9]*)")
_QUOTES = {39: re.compile(rb"[\\']"), 34: re.compile(rb'[\\"]')}
_MAX_SET = 4096
_COMMENT_SPACE = (b"", b" ", b"\t", b"\v", b"\f", b"\r")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
# What the usual state (inside a statement, no string open, backslash escapes on, no
# ANSI quotes, delimiter ';') reads in one go: plain characters and whole strings, up to
# the first thing that needs a closer look (a delimiter, a comment, a backslash outside
# strings, a string left open at the end of the line...). Possessive: it never backtracks.
_PLAIN = re.compile(
    rb"(?:[^'\"`\\#/;*\-]++|'(?:[^'\\]++|\\.)*+'|\"(?:[^\"\\]++|\\.)*+\""
    rb"|`[^`]*+`|-(?!-)|/(?!\*)|\*(?!/))*+",
    re.DOTALL,
)
# Whole lines the usual state reads with _PLAIN alone, each with its newline: what most of
# a dump is (the rows of an INSERT, one a line). Taken many at once by ``_read_lines``;
# the same reading as ``read_line`` gives them one by one (no newline or NUL inside them,
# so no string, comment or line crosses their end; a test compares both readings).
_LINE_PLAIN = rb"[^'\"`\\#/;*\-\n\x00]*+"
_PLAIN_LINES = re.compile(
    rb"(?:" + _LINE_PLAIN + rb"(?:(?:'[^'\\\n\x00]*+(?:\\[^\n\x00][^'\\\n\x00]*+)*+'"
    rb"|\"[^\"\\\n\x00]*+(?:\\[^\n\x00][^\"\\\n\x00]*+)*+\"|`[^`\n\x00]*+`"
    rb"|-(?!-)|/(?!\*)|\*(?!/))" + _LINE_PLAIN + rb")*+\n)*+"
)  # "unrolled" (plain runs between the special tokens): a third faster than _PLAIN's shape
# the rest of a string after its opening quote, with backslash escapes, when it ends on the line
_STRING_END = {
    39: re.compile(rb"(?:[^'\\]++|\\.)*+'", re.DOTALL),
    34: re.compile(rb'(?:[^"\\]++|\\.)*+"', re.DOTALL),
}


def version_id(server_info: str) -> int:
    """``10.11.19-MariaDB-1`` -> 101119, ``8.0.36`` -> 80036 (what ``/*!NNNNN`` compares to)."""
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", server_info)
    if not found:
        return 0
    major, minor, patch = (int(g) for g in found.groups())
    return major * 10000 + minor * 100 + patch


class ScriptGuard:
    """Reads a dump line by line as the client will; raises ``TargetError`` at the
    first line the client would not simply send to the server."""

    def __init__(self, culprit: str, *, server_version: int, mariadb: bool) -> None:
        self.culprit = culprit
        self.server_version = server_version
        self.mariadb = mariadb
        self.line = 0
        self.quote = 0  # the open string's quote character (0: none)
        self.comment = False  # inside /* */
        self.executable = False  # inside /*! */ (the server runs it)
        self.empty = True  # no statement started
        self.delimiter = b";"
        self.escapes: bool | None = None  # backslash escapes in strings (None: not known yet)
        self.ansi: bool | None = None  # ANSI_QUOTES ("..." strings without escapes)
        self.set_text: bytearray | None = None  # the SET statement being read
        self._outside = self._outside_pattern()
        self._tail = b""
        self.fast = True
        """Read runs of plain lines in one step (``_read_lines``); False: line by line only."""

    # -- feeding -----------------------------------------------------------------------------
    def checked(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks`` cut at line ends, each piece yielded once its lines passed: what
        the client receives never holds a line the guard has not read."""
        for data in chunks:
            data = self._tail + data
            cut = data.rfind(b"\n") + 1
            self._tail = data[cut:]
            if len(self._tail) >= MAX_LINE:
                self.line += 1
                self._refuse("a line longer than the client reads at once")
            if cut:
                self._read_lines(data, cut)
                yield data[:cut]
        if self._tail:
            self.read_line(self._tail)
            yield self._tail
            self._tail = b""

    def check(self, chunks: Iterable[bytes]) -> None:
        """Read all of ``chunks`` (refusing them as :meth:`checked` would), sending them nowhere."""
        for _ in self.checked(chunks):
            pass

    # -- reading -----------------------------------------------------------------------------
    def _refuse(self, what: str) -> None:
        raise TargetError(
            f"{self.culprit}: refusing the dump: line {self.line} holds {what}, which the "
            "mariadb/mysql client would not simply send to the server"
        )

    def _outside_pattern(self) -> re.Pattern[bytes]:
        return re.compile(rb"\\|" + re.escape(self.delimiter) + rb"|['\"`#]|--|/\*|\*/")

    def _read_lines(self, data: bytes, cut: int) -> None:
        """The lines of ``data[:cut]`` (which ends with a newline), as ``read_line`` reads them;
        runs of plain lines inside a statement are read in one step."""
        pos = 0
        while pos < cut:
            if self.fast and self._plain_state():
                end = _PLAIN_LINES.match(data, pos, cut).end()  # type: ignore[union-attr]
                if end > pos:
                    self.line += data.count(b"\n", pos, end)
                    pos = end
                    continue
            newline = data.index(b"\n", pos, cut)
            self.read_line(data[pos:newline])
            pos = newline + 1

    def _plain_state(self) -> bool:
        """Inside a statement in the usual state (see _PLAIN), no SET being read."""
        return (
            self.delimiter == b";"
            and self.escapes is True
            and self.ansi is False
            and self.set_text is None
            and not (self.empty or self.quote or self.comment or self.executable)
        )

    def read_line(self, line: bytes) -> None:
        """One line of the script (without its newline)."""
        self.line += 1
        if b"\x00" in line:
            self._refuse("a NUL byte")
        usual = self.delimiter == b";" and self.escapes is True and self.ansi is False
        pos, end = 0, len(line)
        while pos < end:
            if usual and not (self.empty or self.quote or self.comment or self.executable):
                if self.set_text is None:
                    pos = _PLAIN.match(line, pos).end()  # type: ignore[union-attr]
                    if pos >= end:
                        break
                pos = self._in_statement(line, pos)
            elif self.comment:
                close = line.find(b"*/", pos)
                if close < 0:
                    return
                self.comment, pos = False, close + 2
            elif self.quote:
                pos = self._in_string(line, pos)
            elif self.empty:
                pos = self._statement_start(line, pos)
            else:
                pos = self._in_statement(line, pos)
        if self.set_text is not None:
            self.set_text += b"\n"

    def _in_string(self, line: bytes, pos: int) -> int:
        quote = self.quote
        if quote == 96 or self.escapes is False or (quote == 34 and self.ansi):
            close = line.find(bytes([quote]), pos)  # backslashes are plain characters here
            found = close >= 0
            stop = close + 1 if found else len(line)
        elif self.escapes and not (quote == 34 and self.ansi is None):
            whole = _STRING_END[quote].match(line, pos)
            if whole is None:  # the string goes on on the next line
                self._keep(line, pos, len(line))
                return len(line)
            found, stop = True, whole.end()
        else:
            match = _QUOTES[quote].search(line, pos)
            if match is None:
                found, stop = False, len(line)
            elif match.group() == b"\\":
                if self.escapes is None or (quote == 34 and self.ansi is None):
                    self._refuse("a backslash in a quoted string before the dump sets its SQL_MODE")
                stop = match.end() + 1  # the escaped character (none at the end of a line)
                self._keep(line, pos, min(stop, len(line)))
                return stop
            else:
                found, stop = True, match.end()
        self._keep(line, pos, stop)
        if found:
            self.quote = 0
        return stop

    def _statement_start(self, line: bytes, pos: int) -> int:
        pos = _SPACE.match(line, pos).end()  # type: ignore[union-attr]
        if pos >= len(line):
            return pos
        if line[pos] == 35:  # '#'
            return len(line)  # a comment to the end of the line
        if line.startswith(b"--", pos):
            if line[pos + 2 : pos + 3] not in _COMMENT_SPACE:
                self._refuse("a comment the client and the server would end at different places")
            return len(line)
        if line.startswith(b"/*", pos) and not line.startswith((b"/*!", b"/*M!"), pos):
            self.comment = True
            return pos + 2
        match = _WORD.match(line, pos)
        word = match.group().decode() if match else ""
        after = match.end() if match else pos
        if word.lower() in COMMANDS and not _IDENT_CHAR.match(line, after):
            delimiter = _DELIMITER_LINE.fullmatch(line)
            if word.lower() == "delimiter" and delimiter and not line[:pos].strip():
                if delimiter.group(1) not in _DELIMITERS:
                    self._refuse(f"the unexpected client command DELIMITER {delimiter.group(1)!r}")
                self.delimiter = delimiter.group(1)
                self._outside = self._outside_pattern()
                return len(line)
            self._refuse(f"the client command {word!r}")
        if word.upper() not in _STATEMENTS or _IDENT_CHAR.match(line, after):
            shown = line[pos : pos + 20].decode("utf-8", "replace")
            self._refuse(f"a statement txbackup does not write ({shown!r}...)")
        self.empty = False
        if word.upper() == "SET":
            self.set_text = bytearray()
        return pos

    def _in_statement(self, line: bytes, pos: int) -> int:
        end = len(line)
        match = self._outside.search(line, pos)
        if match is None:
            self._keep(line, pos, end)
            return end
        token, at = match.group(), match.start()
        self._keep(line, pos, at)
        if token == b"\\":
            escaped = line[at + 1 : at + 2]
            if escaped not in (b"N", b""):  # \N is NULL; the client drops a final backslash
                self._refuse(f"the client command \\{escaped.decode('utf-8', 'replace')}")
            self._keep(line, at, at + 2)
            return at + 2
        if token == self.delimiter:
            self._statement_end()
            return match.end()
        if token == b"#" or (token == b"--" and line[at + 2 : at + 3] in _COMMENT_SPACE):
            return end  # a comment to the end of the line
        if token == b"--" and _CONTROL.match(line, at + 2):
            # a comment for the server (-- and a control character), not for the client
            self._refuse("a comment the client and the server would end at different places")
        if token == b"--":
            self._keep(line, at, at + 1)
            return at + 1  # '-' then what follows (a '--' may start there)
        if token == b"/*":
            executable = _EXECUTABLE.match(line, at + 2)
            if executable is None:
                if self.executable:
                    self._refuse("a comment inside an executable comment")
                self.comment = True
                return at + 2
            self._executable(executable.group(1) == b"M", executable.group(2))
            self._keep(line, at, executable.end())
            return executable.end()
        if token == b"*/":
            if self.executable:
                self.executable = False
                self._keep(line, at, at + 2)
                return at + 2
            self._keep(line, at, at + 1)
            return at + 1
        self.quote = token[0]  # ' " `
        self._keep(line, at, at + 1)
        return at + 1

    def _executable(self, mariadb_only: bool, digits: bytes) -> None:
        """An executable comment starts: refused unless the destination server runs it."""
        if self.executable:
            self._refuse("an executable comment inside another one")
        if mariadb_only and not self.mariadb:
            self._refuse("a MariaDB-only executable comment (/*M!), which this server skips")
        if digits and (len(digits) not in (5, 6) or int(digits) > self.server_version):
            self._refuse(f"an executable comment for version {digits.decode()}, which this server skips")
        self.executable = True

    def _keep(self, line: bytes, start: int, stop: int) -> None:
        if self.set_text is not None:
            self.set_text += line[start:stop]
            if len(self.set_text) > _MAX_SET:
                self._refuse("an overlong SET statement")

    def _statement_end(self) -> None:
        if self.executable:
            self._refuse("a statement ending inside an executable comment")
        if self.set_text is not None:
            text, self.set_text = bytes(self.set_text), None
            found = _SETS.fullmatch(text)
            if found is None:
                shown = text[:40].decode("utf-8", "replace")
                self._refuse(f"a SET statement txbackup does not write ({shown!r})")
            elif found.group(1) is not None:
                modes = {m.upper() for m in found.group(1).decode().split(",")}
                self.escapes = "NO_BACKSLASH_ESCAPES" not in modes
                self.ansi = bool(modes & _ANSI_QUOTES)
        self.empty = True
