"""Regions of interest: fixed boxes, GTSDB annotation files, clamping, IoU and non-maximum suppression.

Boxes are ``(x1, y1, x2, y2)`` pixel coordinates with ``x2``/``y2`` exclusive (see runtime.preprocess).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import SignkitError

Box = tuple[int, int, int, int]


class RoiError(SignkitError):
    """A box list, box file or frame that cannot be used."""


@dataclass(frozen=True)
class Annotation:
    box: Box
    class_id: int


def clamp_box(box: Sequence[float], width: int, height: int) -> Box | None:
    """Round ``box`` to pixels and clip it to the frame; None if nothing of it is left."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def parse_boxes(text: str) -> list[Box]:
    """Boxes from ``"x1,y1,x2,y2 x1,y1,x2,y2"`` (spaces or semicolons between boxes)."""
    boxes = []
    for part in filter(None, re.split(r"[;\s]+", text.strip())):
        nums = part.split(",")
        if len(nums) != 4:
            raise RoiError(f"box {part!r} is not x1,y1,x2,y2; write boxes like 10,20,50,60")
        try:
            boxes.append(tuple(int(float(n)) for n in nums))
        except ValueError:
            raise RoiError(f"box {part!r} holds a non-number; write boxes like 10,20,50,60") from None
    return boxes  # type: ignore[return-value]


def load_boxes(path: Path) -> list[Box]:
    """Boxes from a JSON file: ``[[x1,y1,x2,y2], ...]`` or ``{"boxes": [...]}``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RoiError(f"{path} is not a readable JSON box file ({err}); write [[x1,y1,x2,y2], ...]") from None
    items = data.get("boxes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(b, (list, tuple)) and len(b) == 4 for b in items):
        raise RoiError(f"{path} must hold [[x1,y1,x2,y2], ...] or {{\"boxes\": [...]}}")
    return [tuple(int(v) for v in b) for b in items]  # type: ignore[misc]


def read_gtsdb(path: Path) -> dict[str, list[Annotation]]:
    """GTSDB ``gt.txt``: ``image;left;top;right;bottom;ClassId`` per line (inclusive), keyed by image stem."""
    out: dict[str, list[Annotation]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise RoiError(f"cannot read annotations {path} ({err.strerror}); pass a GTSDB gt.txt") from None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cells = line.strip().split(";")
        try:
            name, left, top, right, bottom, c = cells[0], *map(int, cells[1:6])
        except (ValueError, IndexError):
            raise RoiError(f"{path} line {i}: expected image;left;top;right;bottom;ClassId, got {line.strip()!r}") from None
        out.setdefault(Path(name).stem, []).append(Annotation((left, top, right + 1, bottom + 1), c))
    return out


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")


def frame_files(folder: Path) -> tuple[dict[str, Path], dict[str, list[Annotation]]]:
    """A GTSDB-layout folder: its frames by stem, and the signs of ``gt.txt`` by stem."""
    folder = Path(folder)
    gt_file = folder / "gt.txt"
    if not gt_file.is_file():
        raise RoiError(f"{folder} has no gt.txt; pass a GTSDB-layout folder (frames + gt.txt)")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise RoiError(f"{folder} holds no frames ({', '.join(IMAGE_SUFFIXES)})")
    return files, read_gtsdb(gt_file)


def read_frame(path: Path) -> np.ndarray:
    """A BGR frame from disk, or a one-line RoiError naming the file."""
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise RoiError(f"{path} is not a readable image; remove or re-encode it")
    return frame


def annotations_fingerprint(folder: Path) -> str:
    """SHA-256 (16 hex digits) of a GTSDB-layout folder's gt.txt: names a frame set wherever it lives."""
    return hashlib.sha256((Path(folder) / "gt.txt").read_bytes()).hexdigest()[:16]


def select_frames(stems: list[str], subset: str) -> list[str]:
    """Frames by the number in their name: "even", "odd", or "all"."""
    if subset == "all":
        return list(stems)
    parity = 0 if subset == "even" else 1
    return [s for s in stems if s.isdigit() and int(s) % 2 == parity]


def iou_matrix(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """Pairwise intersection-over-union, shape (len(a), len(b))."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: Sequence[Sequence[float]], scores: Sequence[float], iou_threshold: float = 0.3) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first (OpenCV's C++ NMS).

    Of two boxes with the same score the one listed first wins (an int8 build's probabilities come in
    steps of 1/256, so ties are common; callers list their boxes best first)."""
    if len(boxes) == 0:
        return []
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    rects = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1).tolist()
    s = np.asarray(scores, np.float64)
    s = s - s.min() + 1.0  # NMSBoxes needs scores above a non-negative threshold; only their order matters
    keep = cv2.dnn.NMSBoxes(rects, s.tolist(), 0.0, float(iou_threshold))
    return [int(i) for i in np.asarray(keep).reshape(-1)]
