"""Find and classify the signs of a whole frame: built-in proposals, one invoke, unknowns dropped.

    clf = Classifier.from_build("runs/edge-bg/model_int8.tflite", threads=2)
    for det in detect_signs(clf, frame_bgr):
        print(det.box, det.prediction.label, det.prediction.score)

Use a build with a background class ("not a sign", ``python -m train --background``): a threshold
alone lets through most of the leaves and windows the proposal stage hands over (``bench.gtsdb``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.classifier import Classifier, Detection
from runtime.proposals import ProposalConfig, Ranker, propose
from runtime.roi import nms

OVERLAP_IOU = 0.3  # two known detections overlapping this much show one sign


def keep_signs(dets: Sequence[Detection], overlap_iou: float = OVERLAP_IOU) -> list[Detection]:
    """Known detections, most confident first; of two that overlap (one sign proposed twice) the surer one."""
    known = [d for d in dets if d.prediction.known]
    keep = nms([d.box for d in known], [d.prediction.score for d in known], overlap_iou)
    return [known[i] for i in keep]


def detect_signs(clf: Classifier, frame_bgr: np.ndarray, cfg: ProposalConfig | None = None,
                 ranker: Ranker | None = None) -> list[Detection]:
    """The signs of a BGR frame: proposals, classified in one invoke, unknowns and duplicates dropped."""
    boxes = [p.box for p in propose(frame_bgr, cfg or ProposalConfig(), ranker)]
    return keep_signs(clf.classify_rois(frame_bgr, boxes))
