"""Write files so that a reader never sees half of one: temp file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
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
    except OSError as err:  # name the file the user asked for, not our temp file
        raise OSError(err.errno, err.strerror, str(dest)) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(dest: Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def write_text_atomic(dest: Path, text: str) -> Path:
    return write_bytes_atomic(dest, text.encode("utf-8"))


def remove_stale_parts(folder: Path) -> list[Path]:
    """Delete the temp files (``.NAME.xxxx.part...``) an interrupted writer left in ``folder``.

    Call it only while holding :func:`folder_lock`, so no live writer's temp file is taken."""
    stale = [p for p in Path(folder).iterdir() if p.is_file() and p.name.startswith(".") and ".part" in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


LOCK_NAME = ".signkit.lock"


@contextlib.contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on a folder for the duration; fail at once, naming the holder, if another has it.

    The lock is ``flock`` on ``FOLDER/.signkit.lock``, which names its holder: the kernel drops it when
    the holder exits, however it exits, so a crashed run never leaves a folder locked. The file is
    removed on release. (Where ``fcntl`` does not exist, Windows, nothing is locked.)
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a target platform
        yield
        return
    path = Path(folder) / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"{folder} is in use by {holder}; wait for it to finish or choose another folder") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the previous holder removed the file between our open and flock: lock the new one
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"{what} (pid {os.getpid()} on {socket.gethostname()}, since {started})\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock


WORK_DIR = ".signkit-tmp"  # a folder's own temp space: what a writer needs for a while, removed by the next lock holder


@contextlib.contextmanager
def locked_work_folder(folder: Path, what: str, flag: str = "--out") -> Iterator[Path]:
    """A writable ``folder`` locked for ``what``, the temp files and temp space an interrupted writer left there
    removed, and FOLDER/.signkit-tmp as the process's temp directory for the duration (libraries that make temp
    folders of their own, e.g. onnxruntime's quantisation, make them there): a kill leaves nothing outside the folder,
    and the next holder cleans it up.

    Yields:
        the temp space (removed again on the way out).
    """
    import shutil

    ensure_writable_dir(Path(folder), flag)
    with folder_lock(folder, what):
        remove_stale_parts(folder)
        work = Path(folder) / WORK_DIR
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        saved = tempfile.tempdir
        tempfile.tempdir = str(work)
        try:
            yield work
        finally:
            tempfile.tempdir = saved
            shutil.rmtree(work, ignore_errors=True)
