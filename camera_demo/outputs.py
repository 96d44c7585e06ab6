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
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from runtime.atomic import ensure_writable_dir, write_bytes_atomic
from runtime.errors import ConfigError
from runtime.preprocess import expand_box

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


class JsonlWriter:
    """One JSON object per line, flushed as soon as it is written."""

    def __init__(self, path: Path) -> None:
        ensure_writable_dir(Path(path).parent, "--jsonl")
        try:
            self.file: IO[str] = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise ConfigError(f"--jsonl {path} cannot be written ({err.strerror}); choose a file you can write") from None
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class VideoSaver:
    """The annotated frames as a video; opened on the first frame (its size is known then)."""

    def __init__(self, path: Path, fps: float) -> None:
        if path.suffix.lower() not in VIDEO_CODECS:
            raise ConfigError(f"--save {path}: use a .mp4 or .avi file (.avi stays readable after a power cut)")
        ensure_writable_dir(path.parent if str(path.parent) else Path("."), "--save")
        self.path, self.fps = path, fps
        self.writer: Any = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            h, w = image.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*VIDEO_CODECS[self.path.suffix.lower()]),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                raise ConfigError(f"--save {self.path}: OpenCV cannot write this video here; try the other of .mp4/.avi")
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.()-]+", "_", text).strip("_")[:60] or "x"


class SnapshotWriter:
    """The crop of each new detection (box plus the classifier's margin), ``<frame>_<label>_<score>.png``."""

    def __init__(self, folder: Path, margin: float) -> None:
        self.folder = ensure_writable_dir(folder, "--snapshots")
        self.margin = margin
        self.count = 0

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
        return path
