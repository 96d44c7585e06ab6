"""Regions of interest: fixed boxes, box files, clamping, IoU and non-maximum suppression.

Boxes are ``(x1, y1, x2, y2)`` pixel coordinates with ``x2``/``y2`` exclusive (see runtime.preprocess).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import SignkitError

Box = tuple[int, int, int, int]


class RoiError(SignkitError):
    """A box list, box file or frame that cannot be used."""


def clamp_box(box: Sequence[float], width: int, height: int) -> Box | None:
    """Round ``box`` to pixels and clip it to the frame; None if nothing of it is left (or a coordinate is NaN/inf)."""
    values = [float(v) for v in box]
    if not all(math.isfinite(v) for v in values):
        return None
    x1, y1, x2, y2 = (round(v) for v in values)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _to_box(values: Sequence[object], what: str) -> Box:
    """Four finite numbers as an integer box, or a RoiError naming ``what``."""
    try:
        nums = [float(v) for v in values]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RoiError(f"{what} holds a non-number; write boxes like 10,20,50,60") from None
    if len(nums) != 4:
        raise RoiError(f"{what} is not x1,y1,x2,y2; write boxes like 10,20,50,60")
    if not all(math.isfinite(v) for v in nums):
        raise RoiError(f"{what} holds NaN or infinity; write boxes like 10,20,50,60")
    return (round(nums[0]), round(nums[1]), round(nums[2]), round(nums[3]))


def parse_boxes(text: str) -> list[Box]:
    """Boxes from ``"x1,y1,x2,y2 x1,y1,x2,y2"`` (spaces or semicolons between boxes)."""
    return [_to_box(part.split(","), f"box {part!r}") for part in filter(None, re.split(r"[;\s]+", text.strip()))]


def load_boxes(path: Path) -> list[Box]:
    """Boxes from a JSON file: ``[[x1,y1,x2,y2], ...]`` or ``{"boxes": [...]}``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RoiError(f"{path} is not a readable JSON box file ({err}); write [[x1,y1,x2,y2], ...]") from None
    items = data.get("boxes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(b, (list, tuple)) for b in items):
        raise RoiError(f"{path} must hold [[x1,y1,x2,y2], ...] or {{\"boxes\": [...]}}")
    return [_to_box(b, f"{path} box {i}") for i, b in enumerate(items)]


Boxes = Sequence[Sequence[float]] | np.ndarray  # (N, 4) x1, y1, x2, y2


def iou_matrix(boxes_a: Boxes, boxes_b: Boxes) -> np.ndarray:
    """Pairwise intersection-over-union, shape (len(a), len(b))."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: Boxes, scores: Sequence[float], iou_threshold: float = 0.3) -> list[int]:
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
