"""Detection-ranked average precision, as the GTSDB literature reports it, so the frame pipeline can be set beside it.

* **43-class mAP@0.5**: every non-background read of a classified box, ranked by its score (also those under the
  unknown threshold, which only decides what the pipeline reports), duplicates of one sign merged as the pipeline
  merges them; a detection is right when its box has IoU >= 0.5 with a not yet matched sign of its class. All-point
  interpolated AP per class (the area under the precision envelope), averaged over the classes the ground truth has.
* **Superclass AP**: the benchmark's three categories (Houben et al. 2013): prohibitory (classes 0-5, 7-10, 15, 16),
  mandatory (33-40) and danger (11, 18-31); the other classes are not scored. Overall and by sign size (the ground
  truth's longer side: small < 32 px, medium 32-45, large > 45); signs of the other sizes, and detections of them or of
  another size left unmatched, are ignored, as COCO does for area ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.roi import Box, iou_matrix

SUPERCLASSES: dict[str, frozenset[int]] = {
    "prohibitory": frozenset([0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16]),
    "mandatory": frozenset(range(33, 41)),
    "danger": frozenset([11, *range(18, 32)]),
}
SIZES: dict[str, tuple[float, float]] = {"small": (0, 32), "medium": (32, 45.0001), "large": (45.0001, np.inf)}


@dataclass(frozen=True)
class Scored:
    """A detection of one frame, for AP: its box, class and score."""

    frame: str
    box: Box
    class_id: int
    score: float


def _side(box: Sequence[float]) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def average_precision(dets: Sequence[Scored], truth: dict[str, list[tuple[Box, int]]], size: tuple[float, float] | None = None) -> float | None:
    """All-point interpolated AP of ``dets`` (one class or superclass) against ``truth`` (per frame: boxes and their
    class, the same labelling as ``dets``); None when no sign is there to find. ``size``: score only signs whose
    longer side is in [low, high); the others, and unmatched detections of another size, are ignored."""
    def counted(box: Sequence[float]) -> bool:
        return size is None or size[0] <= _side(box) < size[1]

    positives = sum(counted(b) for signs in truth.values() for b, _ in signs)
    if positives == 0:
        return None
    matched = {f: np.zeros(len(s), bool) for f, s in truth.items()}
    tp, fp = [], []
    for d in sorted(dets, key=lambda d: -d.score):
        signs = truth.get(d.frame, [])
        hit, ignore = False, not counted(d.box)
        if signs:
            ious = iou_matrix([d.box], [b for b, _ in signs])[0]
            for j in np.argsort(-ious):
                if ious[j] < 0.5:
                    break
                if signs[j][1] != d.class_id or matched[d.frame][j]:
                    continue
                matched[d.frame][j] = True
                hit, ignore = counted(signs[j][0]), not counted(signs[j][0])
                break
        if ignore:
            continue
        tp.append(hit)
        fp.append(not hit)
    if not tp:
        return 0.0
    tps, fps = np.cumsum(tp), np.cumsum(fp)
    recall = tps / positives
    precision = tps / np.maximum(tps + fps, 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def mean_ap(dets: Sequence[Scored], truth: dict[str, list[tuple[Box, int]]]) -> dict[str, float | None]:
    """43-class mAP@0.5 and the superclass APs, overall and by size."""
    classes = sorted({c for signs in truth.values() for _, c in signs})
    per_class = [average_precision([d for d in dets if d.class_id == c],
                                   {f: [(b, k) for b, k in s if k == c] for f, s in truth.items()}) for c in classes]
    found = [ap for ap in per_class if ap is not None]
    out: dict[str, float | None] = {"map_43": float(np.mean(found)) if found else None}
    for name, members in SUPERCLASSES.items():
        sdets = [Scored(d.frame, d.box, 0, d.score) for d in dets if d.class_id in members]
        struth = {f: [(b, 0) for b, k in s if k in members] for f, s in truth.items()}
        out[name] = average_precision(sdets, struth)
        for label, rng in SIZES.items():
            out[f"{name}_{label}"] = average_precision(sdets, struth, rng)
    supers = [out[n] for n in SUPERCLASSES if out[n] is not None]
    out["superclass_map"] = float(np.mean([v for v in supers if v is not None])) if supers else None
    for label in SIZES:
        vals = [out[f"{n}_{label}"] for n in SUPERCLASSES if out[f"{n}_{label}"] is not None]
        out[f"superclass_map_{label}"] = float(np.mean([v for v in vals if v is not None])) if vals else None
    return out
