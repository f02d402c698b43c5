"""The agent's cache of SSTable digests: an unchanged file is never read twice.

SSTables are immutable, and a snapshot's files are hard links to the live ones:
the same inode, size and mtime backup after backup. So the digests of a file
(its SHA-256 and, in an encrypted repository, its keyed blob id) are kept by

    (live path, size, mtime_ns, inode, device)

where the live path is the snapshot file's path without ``snapshots/<tag>/``
(every snapshot's link of one SSTable has the same key). Any change of size,
mtime, inode or device is a miss and the file is hashed again. The ctime is left
out on purpose: every new hard link (every snapshot) changes it.

A cached digest is still checked when the file is uploaded (the byte pipeline
hashes what it stores; ``blobs.put_file`` refuses a mismatch, and the agent
hashes again): a wrong entry can cost a retry, never a wrong blob uploaded. A
blob already stored is skipped on the entry's word, as Medusa skips a stored
file on its name and size; the key here is stricter (inode and mtime in ns).

The cache lives in the agent's ``--state-dir`` as ``hash-cache.json`` (0600,
written whole to a temporary file then renamed), at most ``MAX_ENTRIES``
entries, the most recently used first. A file that cannot be read as a cache
(corrupt, too large, another format) is ignored with a warning and rebuilt.
Without a state directory the cache lives in memory for the agent's lifetime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from txbackup import strictjson
from txbackup.safepaths import create_private

log = logging.getLogger("txbackup.agent")

FORMAT = "txbackup-hash-cache"
VERSION = 1
FILE_NAME = "hash-cache.json"
MAX_ENTRIES = 100_000
"""SSTable components (about ten per SSTable); at most some 50 MB of memory and a 30 MB
file. A node with more rehashes the least recently used ones."""
MAX_FILE_BYTES = 128 << 20
_HEX64 = frozenset("0123456789abcdef")

Key = tuple[str, int, int, int, int]
"""(live path, size, mtime_ns, inode, device)."""


@dataclass(frozen=True)
class Digests:
    sha256: str
    blob: str  # the keyed blob id in an encrypted repository, else ""
    key_id: str  # which blob key made ``blob`` (a hash of it), else ""


def key_id(blob_key: bytes | None) -> str:
    """A short one-way name of a blob key: entries made under another key are misses."""
    if blob_key is None:
        return ""
    return hashlib.sha256(b"txbackup hash cache\0" + blob_key).hexdigest()[:32]


def live_path(path: str) -> str:
    """``<table dir>/<name>`` for ``<table dir>/snapshots/<tag>/<name>`` (the SSTable the
    snapshot links to), else ``path`` itself."""
    parts = Path(path).parts
    if len(parts) >= 4 and parts[-3] == "snapshots":
        return str(Path(*parts[:-3], parts[-1]))
    return path


def key_of(path: str, st: os.stat_result) -> Key:
    return (live_path(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


class HashCache:
    """The digests of files hashed before (thread-safe; ``save`` writes it out)."""

    def __init__(self, state_dir: Path | None, max_entries: int = MAX_ENTRIES) -> None:
        self.path = None if state_dir is None else state_dir / FILE_NAME
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, Digests] = OrderedDict()
        self._loaded = False
        self._dirty = False
        self._lock = threading.Lock()

    def get(self, key: Key, blob_key_id: str) -> Digests | None:
        with self._lock:
            self._load()
            found = self._entries.get(key)
            if found is None or (blob_key_id and found.key_id != blob_key_id):
                return None
            self._entries.move_to_end(key, last=False)
            self._dirty = True
            return found

    def put(self, key: Key, digests: Digests) -> None:
        with self._lock:
            self._load()
            self._entries[key] = digests
            self._entries.move_to_end(key, last=False)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=True)
            self._dirty = True

    def drop(self, key: Key) -> None:
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._dirty = True

    def __len__(self) -> int:
        with self._lock:
            self._load()
            return len(self._entries)

    def save(self) -> None:
        """Write the cache out (atomically, 0600) if it changed. A failure is a warning:
        the next backup hashes again, nothing worse."""
        with self._lock:
            if self.path is None or not self._dirty:
                return
            rows = [[*k, d.sha256, d.blob, d.key_id] for k, d in self._entries.items()]
            data = json.dumps({"format": FORMAT, "version": VERSION, "entries": rows}, separators=(",", ":"))
            partial = f"{self.path}.partial"
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                with os.fdopen(create_private(partial), "w") as out:
                    out.write(data)
                os.replace(partial, self.path)
                self._dirty = False
            except OSError as exc:
                log.warning("hash cache %s not saved: %s", self.path, exc.strerror or exc)
                with contextlib.suppress(OSError):
                    os.unlink(partial)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("hash cache %s ignored (it is rebuilt): %s", self.path, exc.strerror or exc)
            return
        try:
            with os.fdopen(fd, "rb") as src:
                raw = src.read(MAX_FILE_BYTES + 1)
            if len(raw) > MAX_FILE_BYTES:
                raise ValueError(f"over {MAX_FILE_BYTES} bytes")
            self._entries = _parse(strictjson.loads(raw, max_depth=3), self.max_entries)
        except (OSError, ValueError) as exc:
            self._entries = OrderedDict()
            self._dirty = True  # rewritten at the next save
            log.warning("hash cache %s ignored (it is rebuilt): %s", self.path, str(exc)[:200])


def _parse(data: object, limit: int) -> OrderedDict[Key, Digests]:
    """The entries of a cache file, every field checked (``ValueError`` on the first bad one)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ValueError("not a txbackup hash cache of this version")
    rows = data.get("entries")
    if not isinstance(rows, list):
        raise ValueError("no entries list")
    entries: OrderedDict[Key, Digests] = OrderedDict()
    for i, row in enumerate(rows[:limit]):
        if not (isinstance(row, list) and len(row) == 8):
            raise ValueError(f"entry {i} is not a list of 8 fields")
        path, size, mtime, ino, dev, sha, blob, kid = row
        if not (
            isinstance(path, str)
            and path
            and all(type(n) is int and n >= 0 for n in (size, ino, dev))
            and type(mtime) is int
            and _is_hex64(sha)
            and isinstance(blob, str)
            and isinstance(kid, str)
            and (blob == kid == "" or (_is_hex64(blob) and len(kid) == 32))
        ):
            raise ValueError(f"entry {i} is malformed")
        entries[(path, size, mtime, ino, dev)] = Digests(sha, blob, kid)
    return entries
