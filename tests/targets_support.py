"""Plain-folder ArtifactWriter/ArtifactReader for target tests (no compression).

The engine's real ones (``txbackup.engine.artifacts``) compress and checksum;
targets must not care, so their tests use these: artifact ``name`` is the file
``root/name``, and ``root/.names`` keeps the order they were written in.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from txbackup.jobs import MemoryJournal, StepJournal


class DirWriter:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        assert path.is_relative_to(self.root.resolve()) and name not in self.names, name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _written(self, name: str) -> None:
        self.names.append(name)
        with open(self.root / ".names", "a", encoding="utf-8") as index:
            index.write(name + "\n")

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        path = self._path(name)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as stream:
            yield stream
        os.replace(partial, path)
        self._written(name)

    def add_file(self, name: str, path: str) -> None:
        shutil.copyfile(path, self._path(name))
        self._written(name)


class DirReader:
    def __init__(
        self,
        root: str | Path,
        *,
        restore_point: str | None = None,
        position: Mapping[str, Any] | None = None,
        journal: StepJournal | None = None,
    ) -> None:
        self.root = Path(root)
        self._restore_point = restore_point
        self._position = dict(position or {})
        self._journal: StepJournal = journal or MemoryJournal()

    @property
    def restore_point(self) -> str | None:
        return self._restore_point

    @property
    def position(self) -> Mapping[str, Any]:
        return self._position

    @property
    def journal(self) -> StepJournal:
        return self._journal

    def names(self) -> list[str]:
        return (self.root / ".names").read_text(encoding="utf-8").splitlines()

    def path(self, name: str) -> Path:
        assert name in self.names(), name
        return self.root / name

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        with open(self.path(name), "rb") as stream:
            yield stream

    def extract(self, name: str, path: str) -> None:
        shutil.copyfile(self.path(name), path)
