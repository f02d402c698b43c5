"""Which CQL ``restore/schema`` may run: the CREATE statements of the set's own schema.

The statements come from the set's ``schema.json`` (what ``DESCRIBE KEYSPACE``
printed at backup), read from the storage by the engine: untrusted input. So
the agent runs none as given: each is tokenized (strings, quoted names and
comments understood), must be exactly one statement (a ``;`` only at its end),
must start ``CREATE KEYSPACE`` / ``CREATE TYPE`` / ``CREATE TABLE`` /
``CREATE [CUSTOM] INDEX ... ON``, must name the keyspace and object its record
claims, in one of the set's keyspaces and never a system keyspace. Nothing
else (DROP, ALTER, INSERT, GRANT, roles, batches...) can pass.

Functions, aggregates and materialized views, which ``DESCRIBE`` also prints,
are not run (a function is code run by the server): they are skipped and
reported, for the operator to create by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from txbackup.errors import UsageError

CREATED = ("keyspace", "type", "table", "index")
"""The kinds of schema object ``restore/schema`` creates."""
SKIPPED = ("function", "aggregate", "materialized_view")
"""Kinds ``DESCRIBE`` prints that are never run (reported as skipped)."""
MAX_STATEMENT = 1 << 20

_SYSTEM = re.compile(r"^(system|system_.*|dse_.*|solr_admin)$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9][A-Za-z0-9_.]*")


def is_system_keyspace(name: str) -> bool:
    return bool(_SYSTEM.match(name))


@dataclass(frozen=True)
class Token:
    kind: str  # "word" (bare, case-insensitive), "name" (double-quoted), "string", "symbol"
    text: str

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words


@dataclass(frozen=True)
class Statement:
    kind: str
    keyspace: str
    name: str
    text: str


def tokenize(text: str) -> list[Token]:
    """CQL's tokens, comments dropped. ``UsageError`` on an unterminated string or comment."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith(("--", "//"), i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise UsageError("unterminated comment")
            i = end + 2
        elif c in "'\"":
            value, i = _quoted(text, i, c)
            tokens.append(Token("string" if c == "'" else "name", value))
        elif text.startswith("$$", i):
            end = text.find("$$", i + 2)
            if end < 0:
                raise UsageError("unterminated $$ string")
            tokens.append(Token("string", text[i + 2 : end]))
            i = end + 2
        elif match := _WORD.match(text, i):
            tokens.append(Token("word", match.group()))
            i = match.end()
        elif match := _NUMBER.match(text, i):
            tokens.append(Token("symbol", match.group()))
            i = match.end()
        else:
            tokens.append(Token("symbol", c))
            i += 1
    return tokens


def _quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """The value of the quoted token at ``start`` (a doubled quote stands for one) and
    the index after it."""
    out: list[str] = []
    i = start + 1
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise UsageError("unterminated quoted string or name")
        out.append(text[i:end])
        if text.startswith(quote * 2, end):
            out.append(quote)
            i = end + 2
        else:
            return "".join(out), end + 1


class _Reader:
    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def word(self, *words: str) -> bool:
        """Consume the next token if it is one of ``words``."""
        token = self.peek()
        if token is not None and token.is_word(*words):
            self.pos += 1
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.word(*words):
            raise UsageError(f"expected {' '.join(words).upper()}")

    def identifier(self) -> str:
        token = self.peek()
        if token is None or token.kind not in ("word", "name"):
            raise UsageError("expected a name")
        self.pos += 1
        # bare names are case-insensitive (Cassandra lowercases them); quoted ones are exact
        return token.text.lower() if token.kind == "word" else token.text

    def if_not_exists(self) -> None:
        if self.word("if"):
            self.expect("not")
            self.expect("exists")

    def qualified(self) -> tuple[str, str]:
        keyspace = self.identifier()
        token = self.peek()
        if token is None or token != Token("symbol", "."):
            raise UsageError("expected a keyspace-qualified name (keyspace.name)")
        self.pos += 1
        return keyspace, self.identifier()


def parse_create(text: str) -> Statement:
    """What one CREATE statement creates. ``UsageError`` unless ``text`` is exactly one
    ``CREATE KEYSPACE|TYPE|TABLE|[CUSTOM] INDEX`` statement."""
    if len(text) > MAX_STATEMENT:
        raise UsageError("statement too long")
    tokens = tokenize(text)
    if tokens and tokens[-1] == Token("symbol", ";"):
        tokens = tokens[:-1]
    if Token("symbol", ";") in tokens:
        raise UsageError("more than one statement")
    reader = _Reader(tokens)
    reader.expect("create")
    if reader.word("keyspace"):
        reader.if_not_exists()
        keyspace = reader.identifier()
        return Statement("keyspace", keyspace, keyspace, text)
    if reader.word("type", "table"):
        kind = tokens[reader.pos - 1].text.lower()
        reader.if_not_exists()
        keyspace, name = reader.qualified()
        return Statement(kind, keyspace, name, text)
    reader.word("custom")
    if reader.word("index"):
        reader.if_not_exists()
        name = "" if reader.word("on") else reader.identifier()
        if name:
            reader.expect("on")
        keyspace, _table = reader.qualified()
        return Statement("index", keyspace, name, text)  # name "": the server names it
    raise UsageError("only CREATE KEYSPACE, TYPE, TABLE or INDEX statements are restored")


def checked_statements(records: Iterable[Any], keyspaces: Sequence[str]) -> tuple[list[Statement], list[str]]:
    """The statements of ``schema.json`` records that ``restore/schema`` may run, in
    order, and the objects it skips (functions, aggregates, views). ``UsageError``
    naming the record for anything else."""
    allowed = set(keyspaces)
    run: list[Statement] = []
    skipped: list[str] = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping) or not all(
            isinstance(record.get(k), str) for k in ("keyspace", "type", "name", "statement")
        ):
            raise UsageError(f"schema statement {i + 1}: keyspace, type, name and statement strings required")
        kind, keyspace, name = record["type"], record["keyspace"], record["name"]
        # names from the set (untrusted): a control character must not break the line
        what = "".join(c if c.isprintable() else "?" for c in f"{kind} {keyspace}.{name}"[:180])
        label = f"schema statement {i + 1} ({what})"
        if keyspace not in allowed or is_system_keyspace(keyspace):
            raise UsageError(f"{label}: keyspace {keyspace!r} is not one of the set's keyspaces")
        if kind in SKIPPED:
            skipped.append(f"{kind} {keyspace}.{name}")
            continue
        if kind not in CREATED:
            raise UsageError(f"{label}: {kind!r} objects are not restored")
        try:
            statement = parse_create(record["statement"])
        except UsageError as exc:
            raise UsageError(f"{label} refused: {exc}") from None
        if statement.kind != kind or statement.keyspace != keyspace:
            raise UsageError(
                f"{label} refused: the statement creates {statement.kind} in keyspace {statement.keyspace!r}"
            )
        if statement.name not in (name, "" if kind == "index" else name):
            raise UsageError(f"{label} refused: the statement creates {statement.name!r}")
        run.append(Statement(kind, keyspace, name, statement.text))
    return run, skipped
