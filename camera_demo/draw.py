"""Boxes, labels and a frame-rate line drawn on a copy of the frame (for the window, --save and --serve)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from runtime.tracking import Tracked

GREEN, AMBER, WHITE, BLACK = (60, 200, 60), (0, 190, 255), (255, 255, 255), (0, 0, 0)


def _text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int]) -> None:
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    cv2.rectangle(image, (x, y - h - base - 2), (x + w + 4, y + 2), BLACK, -1)
    cv2.putText(image, text, (x + 2, y - base + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def annotate(frame: np.ndarray, tracked: Sequence[Tracked], status: str) -> np.ndarray:
    """A copy of ``frame`` with each detection's box, voted label and score, and ``status`` at the top left."""
    out = frame.copy()
    scale = max(0.45, frame.shape[1] / 2200)
    for t in tracked:
        x1, y1, x2, y2 = t.detection.box
        colour = GREEN if t.class_id == t.detection.prediction.class_id else AMBER  # amber: the vote overrules this frame
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
        _text(out, f"{t.label[:28]} {t.detection.prediction.score:.2f}", (x1, max(y1 - 2, 16)), scale, colour)
    _text(out, status, (6, int(26 * scale / 0.45)), scale, WHITE)
    return out


def status_line(fps: float, ms: dict[str, float], n: int) -> str:
    parts = " ".join(f"{k.split('+')[0]} {v:.1f}" for k, v in ms.items() if k != "total")
    return f"{fps:5.1f} fps | ms {parts} | {n} sign{'s' if n != 1 else ''}"
