"""What the demo writes: a JSON line per frame, an annotated video, PNG crops of new detections.

Each is written so that a crash or Ctrl-C leaves every finished line and frame readable: JSON lines
are flushed one by one, snapshots are renamed into place whole, and the video is closed on every
exit Python sees (an error, Ctrl-C, SIGTERM). A power cut or SIGKILL cannot close an MP4, whose
index is written last: save to ``.avi`` (Motion-JPEG) where that can happen, every frame of which
stays readable.
"""

from __future__ import annotations

import json
import re
from collections import deque
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from runtime.atomic import ensure_writable_dir, write_bytes_atomic
from runtime.errors import ConfigError
from runtime.preprocess import expand_box

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def _rotate(path: Path, keep: int) -> None:
    """PATH becomes PATH.1, PATH.1 becomes PATH.2, ... up to PATH.KEEP; the oldest goes."""
    for i in range(keep, 0, -1):
        older = path.with_name(f"{path.name}.{i - 1}") if i > 1 else path
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{i}"))


class JsonlWriter:
    """One JSON object per line, flushed as soon as it is written; at ``rotate_mb`` the file moves to FILE.1 (FILE.1
    to FILE.2, ...) and a new one starts, ``keep`` old files kept: a week of frames cannot fill the disk."""

    def __init__(self, path: Path, rotate_mb: float | None = None, keep: int = 3) -> None:
        ensure_writable_dir(Path(path).parent, "--jsonl")
        self.path, self.keep = Path(path), keep
        self.limit = int(rotate_mb * 1024 * 1024) if rotate_mb else None
        self._open()

    def _open(self) -> None:
        try:
            self.file: IO[str] = open(self.path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise ConfigError(f"--jsonl {self.path} cannot be written ({err.strerror}); choose a file you can write") from None
        self.size = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        if self.limit and self.size + len(line) > self.limit and self.size:
            self.file.close()
            _rotate(self.path, self.keep)
            self._open()
        self.file.write(line)
        self.file.flush()
        self.size += len(line)

    def close(self) -> None:
        self.file.close()


class VideoSaver:
    """The annotated frames as a video; opened on the first frame (its size is known then). At ``rotate_mb`` it goes
    on in a new file (FILE.1.avi ... as JsonlWriter), ``keep`` old ones kept."""

    def __init__(self, path: Path, fps: float, rotate_mb: float | None = None, keep: int = 3) -> None:
        if path.suffix.lower() not in VIDEO_CODECS:
            raise ConfigError(f"--save {path}: use a .mp4 or .avi file (.avi stays readable after a power cut)")
        ensure_writable_dir(path.parent if str(path.parent) else Path("."), "--save")
        self.path, self.fps, self.keep = path, fps, keep
        self.limit = int(rotate_mb * 1024 * 1024) if rotate_mb else None
        self.writer: Any = None
        self.frames = 0
        self._in_file = 0

    def _older(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.stem}.{i}{self.path.suffix}") if i else self.path

    def write(self, image: np.ndarray) -> None:
        if self.writer is not None and self.limit and self._in_file % 30 == 0 and self.path.stat().st_size > self.limit:
            self.writer.release()
            for i in range(self.keep, 0, -1):
                if self._older(i - 1).exists():
                    self._older(i - 1).replace(self._older(i))
            self.writer = None
        if self.writer is None:
            h, w = image.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*VIDEO_CODECS[self.path.suffix.lower()]),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                raise ConfigError(f"--save {self.path}: OpenCV cannot write this video here; try the other of .mp4/.avi")
            self._in_file = 0
        self.writer.write(image)
        self.frames += 1
        self._in_file += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.()-]+", "_", text).strip("_")[:60] or "x"


class SnapshotWriter:
    """The crop of each new detection (box plus the classifier's margin), ``<frame>_<label>_<score>.png``; past
    ``max_files`` the oldest of this run's are removed."""

    def __init__(self, folder: Path, margin: float, max_files: int | None = None) -> None:
        self.folder = ensure_writable_dir(folder, "--snapshots")
        self.margin = margin
        self.max_files = max_files
        self.count = 0
        self._written: deque[Path] = deque()

    def write(self, frame: np.ndarray, index: int, box: tuple[int, int, int, int], label: str, score: float) -> Path:
        x1, y1, x2, y2 = expand_box(box, self.margin, frame.shape[1], frame.shape[0])
        ok, png = cv2.imencode(".png", frame[y1:y2, x1:x2])
        if not ok:
            raise ConfigError(f"cannot encode a snapshot of frame {index}")
        stem = f"{index:06d}_{_safe(label)}_{score:.2f}"
        path = self.folder / f"{stem}.png"
        n = 2
        while path.exists():  # two new signs of one label and score in one frame
            path, n = self.folder / f"{stem}-{n}.png", n + 1
        write_bytes_atomic(path, png.tobytes())
        self.count += 1
        self._written.append(path)
        while self.max_files is not None and len(self._written) > self.max_files:
            self._written.popleft().unlink(missing_ok=True)
        return path
