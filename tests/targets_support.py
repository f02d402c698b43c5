"""Plain-folder ArtifactWriter/ArtifactReader for target tests (no compression).

The engine's real ones (``txbackup.engine.artifacts``) compress and checksum;
targets must not care, so their tests use these: artifact ``name`` is the file
``root/name``, and ``root/.names`` keeps the order they were written in.
``backup()`` captures and exports a target into such a folder.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from txbackup.engine.artifacts import RestoreContext
from txbackup.jobs import StepJournal
from txbackup.targets.base import Target


class DirWriter:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        assert path.is_relative_to(self.root.resolve()) and name not in self.names, name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _written(self, name: str) -> None:
        with self._lock:  # targets may write several artifacts at once (mysql jobs > 1)
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


class DirReader(RestoreContext):
    def __init__(
        self,
        root: str | Path,
        *,
        restore_point: str | None = None,
        position: Mapping[str, Any] | None = None,
        journal: StepJournal | None = None,
    ) -> None:
        super().__init__(restore_point, position, journal)
        self.root = Path(root)

    def names(self) -> list[str]:
        index = self.root / ".names"  # none: nothing was exported into this folder
        return index.read_text(encoding="utf-8").splitlines() if index.exists() else []

    def path(self, name: str) -> Path:
        assert name in self.names(), name
        return self.root / name

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        with open(self.path(name), "rb") as stream:
            yield stream

    def extract(self, name: str, path: str, *, durable: bool = False) -> None:
        shutil.copyfile(self.path(name), path)


def backup(
    target: Target, out_dir: str | Path, after_capture: Callable[[], object] | None = None
) -> Mapping[str, Any]:
    """capture -> (``after_capture()``) -> export into ``out_dir`` -> release (twice: it is
    idempotent); the capture's position."""
    capture = target.capture("set-1")
    try:
        if after_capture:
            after_capture()
        writer = DirWriter(out_dir)
        errors: list[BaseException] = []

        def export() -> None:
            try:
                capture.export(writer)
            except BaseException as exc:
                errors.append(exc)

        # the engine exports in another thread than the one that captured
        worker = threading.Thread(target=export)
        worker.start()
        worker.join()
        if errors:
            raise errors[0]
        return capture.position()
    finally:
        capture.release()
        capture.release()
