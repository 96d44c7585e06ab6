"""Find candidate signs in a full frame with OpenCV only: colour maps, multi-level thresholds, shape filters, NMS.

German signs are red (prohibitions, warnings), blue (mandatory) or yellow (priority road). On a
half-size frame we compute chromaticity maps that do not depend on brightness (redness
``min(R-G, R-B)/(R+G+B)``, blueness ``(B-R)/(R+G+B)``, yellowness ``min(R-B, G-B)/(R+G+B)``),
threshold each at a few levels (a cheap MSER: touching signs separate at the higher levels, faded
ones appear at the lower), keep roughly square blobs of sign size, and merge duplicates with NMS.
The classifier, with its unknown threshold, decides what is a sign.
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
    min_fill: float = 0.15  # coloured pixels / box area (rings are thin)
    yellow_grow: float = 1.4  # the yellow square of "priority road" sits inside a white rim
    nms_iou: float = 0.5
    max_proposals: int = 64


@dataclass(frozen=True)
class Proposal:
    box: Box
    colour: str
    score: float


def colour_maps(small_bgr: np.ndarray, gain: float) -> dict[str, np.ndarray]:
    f = small_bgr.astype(np.float32)
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    k = gain * 255.0 / (b + g + r + 1.0)
    maps = {"red": np.minimum(r - g, r - b) * k, "blue": (b - r) * k, "yellow": np.minimum(r - b, g - b) * k}
    return {name: np.clip(m, 0, 255).astype(np.uint8) for name, m in maps.items()}


def propose(frame_bgr: np.ndarray, cfg: ProposalConfig = ProposalConfig()) -> list[Proposal]:
    """Candidate sign boxes in full-frame coordinates, best first."""
    h, w = frame_bgr.shape[:2]
    small = cv2.resize(frame_bgr, (max(1, int(w * cfg.scale)), max(1, int(h * cfg.scale))), interpolation=cv2.INTER_AREA)
    inv = 1.0 / cfg.scale
    boxes: list[Box] = []
    found: list[Proposal] = []
    for name, cmap in colour_maps(small, cfg.gain).items():
        grow = cfg.yellow_grow if name == "yellow" else 1.0
        for level in cfg.levels:
            _, mask = cv2.threshold(cmap, level, 255, cv2.THRESH_BINARY)
            _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for x, y, bw, bh, area in stats[1:]:
                side = max(bw, bh) * inv
                fill = area / (bw * bh)
                if not cfg.min_size <= side <= cfg.max_size or max(bw / bh, bh / bw) > cfg.max_aspect or fill < cfg.min_fill:
                    continue
                cx, cy = (x + bw / 2) * inv, (y + bh / 2) * inv
                hw, hh = bw * inv * grow / 2, bh * inv * grow / 2
                box = (max(0, int(cx - hw)), max(0, int(cy - hh)), min(w, int(np.ceil(cx + hw))), min(h, int(np.ceil(cy + hh))))
                found.append(Proposal(box, name, float(fill)))
                boxes.append(box)
    keep = nms(boxes, [p.score for p in found], cfg.nms_iou)[: cfg.max_proposals]
    return [found[i] for i in keep]
