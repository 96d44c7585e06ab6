"""A read-only view of files in a folder or inside a zip archive, so loaders need not care which."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path


class FileTree:
    """Files under a folder: names are POSIX paths relative to the root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        if self._names is None:
            self._names = sorted(
                Path(dirpath, f).relative_to(self.root).as_posix()
                for dirpath, _, files in os.walk(self.root)
                for f in files
            )
        return self._names

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def describe(self, name: str) -> str:
        return str(self.root / name)

    def stamp(self, name: str) -> str:
        """Size and mtime (a changed file gets a new stamp); "missing" for a file that is not there."""
        try:
            st = (self.root / name).stat()
        except OSError:
            return "missing"
        return f"{st.st_size}:{st.st_mtime_ns}"


class ZipTree(FileTree):
    """Members of a zip archive, read without extracting."""

    def __init__(self, archive: Path) -> None:
        super().__init__(archive)
        self._zip = zipfile.ZipFile(archive)

    def names(self) -> list[str]:
        if self._names is None:
            self._names = sorted(i.filename for i in self._zip.infolist() if not i.is_dir())
        return self._names

    def read(self, name: str) -> bytes:
        return self._zip.read(name)

    def describe(self, name: str) -> str:
        return f"{self.root}:{name}"

    def stamp(self, name: str) -> str:
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            return "missing"
        return f"{info.file_size}:{info.CRC}"


def digest(parts: list[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
