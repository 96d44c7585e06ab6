"""Find candidate signs in a full frame with OpenCV only: colour maps, multi-level contours, shape filters, NMS.

German signs are red (prohibitions, warnings), blue (mandatory) or yellow (priority road). On a
half-size frame we compute chromaticity maps that do not depend on brightness (redness
``min(R-G, R-B)/(R+G+B)``, blueness ``(B-R)/(R+G+B)``, yellowness ``min(R-B, G-B)/(R+G+B)``)
and threshold each at a few levels (a cheap MSER: touching signs separate at the higher levels,
faded ones appear at the lower). Two kinds of contour are candidates:

* outer contours of coloured blobs (discs, rings, triangles, the yellow diamond);
* holes inside them: the white interior of a red ring or triangle, which is what remains of a
  sign when red foliage around it floods the colour map.

Signs are convex shapes, so contours with low solidity (area / convex-hull area) or extent
(area / box area) are dropped, and NMS merges what the levels found twice. The classifier, with
its unknown threshold, decides what is a sign. Measured on the 60 GTSDB frames (bench.gtsdb):
see the README; this stage finds about 7 of 10 signs, which is not yet enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.roi import Box, nms


@dataclass(frozen=True)
class ProposalConfig:
    scale: float = 0.5  # work on a downscaled frame
    levels: tuple[int, ...] = (40, 70, 110)  # thresholds on the 0..255 colour maps
    gain: float = 4.0  # colour map = clip(chromaticity * gain * 255)
    min_size: int = 16  # sign side in full-frame pixels
    max_size: int = 250
    max_aspect: float = 1.6  # width/height (and its inverse)
    min_solidity: float = 0.8  # contour area / convex hull area: signs are convex
    min_extent: float = 0.45  # contour area / box area (a triangle is 0.5)
    yellow_grow: float = 1.4  # the yellow square of "priority road" sits inside a white rim
    hole_grow: float = 1.3  # a ring's or triangle's interior is this much smaller than the sign
    nms_iou: float = 0.6
    max_proposals: int = 128


@dataclass(frozen=True)
class Proposal:
    box: Box
    colour: str
    score: float  # solidity x extent of the contour: how sign-like the shape is


def colour_maps(small_bgr: np.ndarray, gain: float) -> dict[str, np.ndarray]:
    f = small_bgr.astype(np.float32)
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    k = gain * 255.0 / (b + g + r + 1.0)
    maps = {"red": np.minimum(r - g, r - b) * k, "blue": (b - r) * k, "yellow": np.minimum(r - b, g - b) * k}
    return {name: np.clip(m, 0, 255).astype(np.uint8) for name, m in maps.items()}


def propose(frame_bgr: np.ndarray, cfg: ProposalConfig = ProposalConfig()) -> list[Proposal]:
    """Candidate sign boxes in full-frame coordinates, most sign-like first."""
    h, w = frame_bgr.shape[:2]
    small = cv2.resize(frame_bgr, (max(1, int(w * cfg.scale)), max(1, int(h * cfg.scale))), interpolation=cv2.INTER_AREA)
    inv = 1.0 / cfg.scale
    min_side = cfg.min_size * cfg.scale
    found: list[Proposal] = []
    for name, cmap in colour_maps(small, cfg.gain).items():
        for level in cfg.levels:
            _, mask = cv2.threshold(cmap, level, 255, cv2.THRESH_BINARY)
            contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            if hierarchy is None:
                continue
            for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
                x, y, bw, bh = cv2.boundingRect(contour)
                if max(bw, bh) < min_side or max(bw, bh) * inv > cfg.max_size or max(bw / bh, bh / bw) > cfg.max_aspect:
                    continue
                area = cv2.contourArea(contour)
                extent = area / (bw * bh)
                if extent < cfg.min_extent:
                    continue
                solidity = area / max(cv2.contourArea(cv2.convexHull(contour)), 1.0)
                if solidity < cfg.min_solidity:
                    continue
                grow = cfg.hole_grow if parent >= 0 else cfg.yellow_grow if name == "yellow" else 1.0
                cx, cy = (x + bw / 2) * inv, (y + bh / 2) * inv
                hw, hh = bw * inv * grow / 2, bh * inv * grow / 2
                box = (max(0, int(cx - hw)), max(0, int(cy - hh)), min(w, int(np.ceil(cx + hw))), min(h, int(np.ceil(cy + hh))))
                found.append(Proposal(box, name, float(solidity * extent)))
    keep = nms([p.box for p in found], [p.score for p in found], cfg.nms_iou)[: cfg.max_proposals]
    return [found[i] for i in keep]
