"""Annotated road frames on disk (the GTSDB layout): frames + ``gt.txt``, read and checked.

Not used on the Pi: bench, the camera demo's drive video and the frame-pipeline fitting in train/
read annotated frames through this module. It needs only OpenCV, so it lives with the runtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.roi import Box, RoiError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")
# The 43 classes of GTSRB and of the road frames of GTSDB, by ClassId.
GTSRB_CLASS_NAMES: tuple[str, ...] = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead",
    "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
)


@dataclass(frozen=True)
class Annotation:
    box: Box  # x2/y2 exclusive
    class_id: int
    where: str = ""  # the gt.txt line it came from ("PATH line N"), for errors


def read_gtsdb(path: Path, num_classes: int | None = None, frames: set[str] | None = None) -> dict[str, list[Annotation]]:
    """GTSDB ``gt.txt``: ``image;left;top;right;bottom;ClassId`` per line (inclusive), keyed by image stem.

    Args:
        num_classes: reject class ids outside ``0..num_classes-1`` (None: only negative ids).
        frames: the stems of the frames present; reject lines naming another frame (None: no check).

    Raises:
        RoiError: an unreadable file, or a line that is malformed, has a box with no area, a
            negative coordinate, a class id out of range or a frame that is not there; with its line number.
    """
    out: dict[str, list[Annotation]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RoiError(f"cannot read annotations {path} ({err}); pass a GTSDB gt.txt") from None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cells = line.strip().split(";")
        try:
            if len(cells) != 6:
                raise ValueError
            name, left, top, right, bottom, c = cells[0], *map(int, cells[1:6])
        except ValueError:
            raise RoiError(f"{path} line {i}: expected image;left;top;right;bottom;ClassId, got {line.strip()!r}") from None
        where = f"{path} line {i}"
        if min(left, top) < 0 or right <= left or bottom <= top:
            raise RoiError(f"{where}: box {left},{top},{right},{bottom} is inverted, negative or of zero size; fix or "
                           f"delete the line")
        if c < 0 or (num_classes is not None and c >= num_classes):
            raise RoiError(f"{where}: class id {c} is outside 0..{(num_classes or 1) - 1}; fix or delete the line")
        stem = Path(name).stem
        if frames is not None and stem not in frames:
            raise RoiError(f"{where}: frame {name} is not in {Path(path).parent}; add the frame or delete the line")
        out.setdefault(stem, []).append(Annotation((left, top, right + 1, bottom + 1), c, where))
    return out


def frame_files(folder: Path, num_classes: int | None = None) -> tuple[dict[str, Path], dict[str, list[Annotation]]]:
    """A GTSDB-layout folder: its frames by stem, and the signs of ``gt.txt`` by stem (checked against the frames)."""
    folder = Path(folder)
    gt_file = folder / "gt.txt"
    if not folder.is_dir():
        raise RoiError(f"{folder} does not exist; pass a folder of frames + gt.txt (python -m train.download gtsdb makes one)")
    if not gt_file.is_file():
        raise RoiError(f"{folder} has no gt.txt; pass a GTSDB-layout folder (frames + gt.txt)")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise RoiError(f"{folder} holds no frames ({', '.join(IMAGE_SUFFIXES)})")
    return files, read_gtsdb(gt_file, num_classes, set(files))


def read_frame(path: Path, signs: Sequence[Annotation] = ()) -> np.ndarray:
    """A BGR frame from disk, or a one-line RoiError naming the file.

    ``signs``: the frame's annotations, checked against its size now that it is known. A box past the right or
    bottom edge is refused, as one past the left or top edge is when gt.txt is read: a box that is not where the
    sign is would be scored as a miss however well the pipeline did."""
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None or frame.size == 0:
        raise RoiError(f"{path} is not a readable image; remove or re-encode it")
    h, w = frame.shape[:2]
    for a in signs:
        x1, y1, x2, y2 = a.box
        if x2 > w or y2 > h:
            raise RoiError(f"{a.where or path}: box {x1},{y1},{x2 - 1},{y2 - 1} reaches past the {w}x{h} frame {Path(path).name}; "
                           f"fix or delete the line")
    return frame


def annotations_fingerprint(folder: Path) -> str:
    """SHA-256 (16 hex digits) of a GTSDB-layout folder's gt.txt: names a frame set wherever it lives."""
    return hashlib.sha256((Path(folder) / "gt.txt").read_bytes()).hexdigest()[:16]


def fitted_on(folder: Path, stems: Sequence[str]) -> dict[str, Any]:
    """What a fitted part records of one frame folder it was fitted on: the checksum of its gt.txt and the stems used
    (no path: the record travels with the part to other machines)."""
    return {"gt_sha256": annotations_fingerprint(folder), "frames": list(stems)}


def frames_fitted(records: Sequence[dict[str, Any]], folder: Path) -> set[str]:
    """The frames of ``folder`` among ``records`` (:func:`fitted_on` of each folder a part was fitted on): they fitted
    it, so they cannot test it."""
    here = annotations_fingerprint(folder)
    return {s for r in records if r.get("gt_sha256") == here for s in r.get("frames") or ()}


def select_frames(stems: list[str], subset: str) -> list[str]:
    """Frames by the number in their name: "even", "odd", or "all"."""
    if subset == "all":
        return list(stems)
    parity = 0 if subset == "even" else 1
    return [s for s in stems if s.isdigit() and int(s) % 2 == parity]
