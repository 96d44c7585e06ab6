"""Write files so that a reader never sees half of one: temp file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import ConfigError


def ensure_writable_dir(path: Path, flag: str = "--out") -> Path:
    """Create ``path`` if needed and prove we can write into it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".signkit-probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"{flag} {path} is not writable ({err.strerror}); choose a folder you can write to") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: Path, dest: Path) -> Path:
    """Rename a finished temp file onto ``dest`` with normal permissions (mkstemp makes them 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, dest)
    return dest


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``, else delete it."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part" + dest.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(dest: Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def write_text_atomic(dest: Path, text: str) -> Path:
    return write_bytes_atomic(dest, text.encode("utf-8"))
