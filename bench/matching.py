"""Detections against ground truth: the one matching rule every frame benchmark uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.roi import iou_matrix


def match_pairs(det_boxes: Sequence[Sequence[float]], det_classes: Sequence[int], gt_boxes: Sequence[Sequence[float]],
                gt_classes: Sequence[int], iou: float = 0.5, need_class: bool = True) -> list[tuple[int, int]]:
    """Greedy one-to-one (truth, detection) pairs with IoU >= ``iou``, each truth taking its best free detection.

    With ``need_class`` a pair also needs the right class (a true positive); without, it is the
    detection that covers the sign, whatever it says (to follow a sign's labels over frames).
    """
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return []
    ious = iou_matrix(gt_boxes, det_boxes)
    used: set[int] = set()
    pairs = []
    for ti, cls in enumerate(gt_classes):
        for di in np.argsort(-ious[ti], kind="stable"):
            if ious[ti, di] < iou:
                break
            if int(di) not in used and (not need_class or det_classes[di] == cls):
                used.add(int(di))
                pairs.append((ti, int(di)))
                break
    return pairs
