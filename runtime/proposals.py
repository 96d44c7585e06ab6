"""Find candidate signs in a full frame with OpenCV only: colour maps, connected components, a ranking, NMS.

German signs are red (prohibitions, warnings), blue (mandatory) or yellow (priority road). On a
half-size frame we compute chromaticity maps that do not depend on brightness (redness
``min(R-G, R-B)/(R+G+B)``, blueness ``(B-R)/(R+G+B)``, yellowness ``min(R-B, G-B)/(R+G+B)``)
and threshold each at a few levels (a cheap MSER: touching signs separate at the higher levels,
faded ones appear at the lower). Each thresholded map is read two ways, as a *cue*:

* ``solid``: connected blobs of colour (a blue disc, the yellow square of "priority road");
* ``hole``: regions without the colour that the colour encloses (the white face inside a red
  ring or triangle), which is what remains of a sign when red foliage floods the colour map.

A cue knows how much bigger the sign is than what it sees (``grow``: a red ring's face is about
0.65 of the sign, the yellow square about half of the diamond). ``cv2.connectedComponentsWithStats``
gives every blob and hole with its box and pixel count; size, aspect and fill ratio (signs are
convex: a disc fills 0.79 of its box, a triangle 0.5) filter them, all vectorised.

A frame still yields a few hundred candidates, most of them leaves and windows. Each gets a few
numbers read from integral images in O(1) (fill, squareness, size, brightness and saturation of
its face, how much of the cue's colour is inside the sign's box and around it) and a logistic
score per cue (:class:`Ranker`, fitted by ``python -m train.frames.ranker``). NMS by that score, then
the best ``max_proposals`` go to the classifier, whose background class and unknown threshold
decide what is a sign. Measured on GTSDB frames: ``python -m bench.gtsdb``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.errors import ConfigError
from runtime.roi import Box, nms


@dataclass(frozen=True)
class Cue:
    colour: str  # "red" | "blue" | "yellow"
    kind: str  # "solid" (blobs of the colour) | "hole" (what the colour encloses)
    levels: tuple[int, ...]  # thresholds on the 0..255 colour map
    grow: float  # sign side / side of what the cue finds

    @property
    def name(self) -> str:
        return f"{self.colour}-{self.kind}"


DEFAULT_CUES = (
    Cue("red", "hole", (12, 40, 70, 110), 1.55),  # face of a red ring or triangle
    Cue("blue", "solid", (30, 55, 90), 1.2),  # blue disc (its white symbol is a hole in it)
    Cue("yellow", "solid", (55, 110), 2.0),  # yellow square of "priority road"
    Cue("yellow", "hole", (30,), 1.35),  # a sign's face against sunlit (yellowish) leaves
)

FEATURES = ("bias", "fill", "squareness", "log_size", "level", "face_v", "face_s", "face_contrast",
            "colour_in", "colour_out")
RANKER_FILE = Path(__file__).with_name("proposal_ranker.json")


@dataclass(frozen=True)
class Ranker:
    """Per-cue logistic weights over :data:`FEATURES`; a cue without weights ranks by fill ratio."""

    weights: dict[str, tuple[float, ...]] = field(default_factory=dict)
    fitted_on: tuple[dict[str, Any], ...] = ()  # per frame folder: its gt.txt checksum and the frames that fitted the
    # weights (runtime.annotations.fitted_on): do not score on them

    @classmethod
    def load(cls, path: Path = RANKER_FILE) -> Ranker:
        try:
            data = json.loads(Path(path).read_text())
            weights = {k: tuple(float(x) for x in v) for k, v in data["weights"].items()}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path} is not a proposal ranker ({err}); refit it with python -m train.frames.ranker") from None
        if data.get("features") != list(FEATURES) or any(len(v) != len(FEATURES) for v in weights.values()):
            raise ConfigError(f"{path} was fitted on other features; refit it with python -m train.frames.ranker")
        fitted = data.get("fitted_on", ())
        if fitted and isinstance(fitted[0], str):  # one folder, recorded as its stems and one checksum
            fitted = [{"gt_sha256": data.get("gt_sha256"), "frames": fitted}]
        return cls(weights, tuple(fitted))

    def score(self, cue: Cue, feats: np.ndarray) -> np.ndarray:
        w = self.weights.get(cue.name)
        if w is None:
            return feats[:, FEATURES.index("fill")]
        return 1.0 / (1.0 + np.exp(-(feats @ np.asarray(w))))


def default_ranker() -> Ranker:
    return Ranker.load() if RANKER_FILE.exists() else Ranker()


@dataclass(frozen=True)
class ProposalConfig:
    scale: float = 0.5  # work on a downscaled frame
    gain: float = 4.0  # colour map = clip(chromaticity * gain * 255)
    cues: tuple[Cue, ...] = DEFAULT_CUES
    min_size: int = 16  # sign side in full-frame pixels
    max_size: int = 250
    max_aspect: float = 1.6  # width/height (and its inverse)
    min_fill: float = 0.45  # pixels / box area (disc 0.79, triangle 0.5, diamond 0.5)
    nms_iou: float = 0.5
    max_proposals: int = 60  # 80 proposed no more held-out signs on two splits of the fitting frames
    per_cue: int = 8  # the best few of every cue make the cut, so a rare cue is not crowded out by a busy one


@dataclass(frozen=True)
class Proposal:
    """A box to classify and where it came from: a cue of the proposal stage, or ``"given"`` for a fixed box."""

    box: Box
    cue: str  # Cue.name ("red-hole", ...) or "given"
    score: float  # the ranker's sign-likeness, 0..1 (1.0 for given boxes)

    @property
    def colour(self) -> str:
        return self.cue.split("-")[0]


@dataclass
class Candidates:
    """Every candidate of one frame before NMS: boxes (x1, y1, x2, y2 floats), features, cue index."""

    boxes: np.ndarray
    features: np.ndarray
    cue: np.ndarray


def colour_maps(small_bgr: np.ndarray, gain: float) -> dict[str, np.ndarray]:
    """Redness, blueness and yellowness (0..255) of every pixel of a BGR frame.

    The chromaticity formula in float32, ``clip(diff * (gain * 255 / (sum + 1)))`` truncated to uint8, with
    the scale computed once for the three maps and OpenCV's vectorised multiply: 1.4-1.7 against 4.1 ms for
    the table lookup it replaces (680x400, one thread), the same bytes for every (sum, difference) pair."""
    b, g, r = cv2.split(small_bgr)
    total = cv2.add(cv2.add(b, g, dtype=cv2.CV_32F), r, dtype=cv2.CV_32F)
    scale = np.float32(gain * 255.0) / (total + np.float32(1.0))
    diffs = {"red": cv2.min(cv2.subtract(r, g), cv2.subtract(r, b)), "blue": cv2.subtract(b, r),
             "yellow": cv2.min(cv2.subtract(r, b), cv2.subtract(g, b))}  # uint8: negative differences saturate to 0
    return {name: np.minimum(cv2.multiply(diff, scale, dtype=cv2.CV_32F), np.float32(255)).astype(np.uint8)
            for name, diff in diffs.items()}


def component_stats(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """``cv2.connectedComponentsWithStats``'s stats of a uint8 mask (row 0: the background).

    16-bit labels make the labelling two to three times faster on a sparse mask (3.8 against 8.8 ms for the
    five colour-blob masks of a 680x400 frame). They are used only where they cannot overflow (fewer set
    pixels than 65535, so fewer components), whatever an OpenCV version does on an overflow."""
    ltype = cv2.CV_16U if cv2.countNonZero(mask) < np.iinfo(np.uint16).max else cv2.CV_32S
    return cv2.connectedComponentsWithStats(mask, connectivity=connectivity, ltype=ltype)[2]


def _components(mask: np.ndarray, hole: bool, grow: float, cfg: ProposalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x, y, w, h in mask pixels) and pixel counts of the components that could be a sign's cue."""
    stats = component_stats(mask, 4 if hole else 8)
    x, y, w, h, area = stats[1:].T  # label 0 is the background of the mask
    side = np.maximum(w, h) * grow / cfg.scale  # the sign's side in frame pixels
    keep = (side >= cfg.min_size) & (side <= cfg.max_size) & (np.maximum(w, h) <= cfg.max_aspect * np.minimum(w, h))
    keep &= area >= cfg.min_fill * w * h
    if hole:  # a hole is enclosed: it cannot touch the frame's edge
        mh, mw = mask.shape
        keep &= (x > 0) & (y > 0) & (x + w < mw) & (y + h < mh)
    return stats[1:][keep, :4].astype(np.float64), area[keep].astype(np.float64)


def _box_mean(integral: np.ndarray, cx: np.ndarray, cy: np.ndarray, hw: np.ndarray, hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum and pixel count of the image inside each box (centre, half sizes), clipped to the image."""
    H, W = integral.shape[0] - 1, integral.shape[1] - 1
    x1, x2 = (np.clip(np.round(v), 0, W).astype(int) for v in (cx - hw, cx + hw))
    y1, y2 = (np.clip(np.round(v), 0, H).astype(int) for v in (cy - hh, cy + hh))
    total = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
    return total.astype(np.float64), np.maximum((x2 - x1) * (y2 - y1), 1).astype(np.float64)


def _cue_components(cue: Cue, level: int, maps: dict[str, np.ndarray], cfg: ProposalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x, y, w, h in the small frame) and pixel counts of what one cue finds at one level."""
    mask = cv2.threshold(maps[cue.colour], level, 255, cv2.THRESH_BINARY_INV if cue.kind == "hole" else cv2.THRESH_BINARY)[1]
    return _components(mask, cue.kind == "hole", cue.grow, cfg)


def _features(xywh: np.ndarray, area: np.ndarray, level: np.ndarray, sign: tuple[np.ndarray, ...], colour: np.ndarray,
              integrals: dict[str, np.ndarray], cfg: ProposalConfig) -> np.ndarray:
    """:data:`FEATURES` of every candidate, from integral images (one vectorised pass per frame).

    ``sign`` is the sign's box each cue implies: centres and half sizes (cx, cy, sw, sh)."""
    bw, bh = xywh[:, 2], xywh[:, 3]
    cx, cy, sw, sh = sign
    face_v, n_face = _box_mean(integrals["v"], cx, cy, bw * 0.3, bh * 0.3)
    face_s, _ = _box_mean(integrals["s"], cx, cy, bw * 0.3, bh * 0.3)
    sign_v, n_sign = _box_mean(integrals["v"], cx, cy, sw, sh)
    col_in, col_all, n_all = (np.zeros_like(area) for _ in range(3))
    for name in np.unique(colour):  # the cue's own colour inside the sign's box and around it
        sel = colour == name
        col_in[sel] = _box_mean(integrals[name], cx[sel], cy[sel], sw[sel], sh[sel])[0]
        col_all[sel], n_all[sel] = _box_mean(integrals[name], cx[sel], cy[sel], sw[sel] * 1.5, sh[sel] * 1.5)
    face_v, face_s, sign_v = face_v / n_face, face_s / n_face, sign_v / n_sign
    col_out = (col_all - col_in) / np.maximum(n_all - n_sign, 1)
    return np.stack([
        np.ones_like(area), area / (bw * bh), np.minimum(bw, bh) / np.maximum(bw, bh),
        np.log2(2 * np.maximum(sw, sh) / cfg.scale), level / 255.0,
        face_v / 255.0, face_s / 255.0, (face_v - sign_v) / 255.0, col_in / n_sign / 255.0, col_out / 255.0,
    ], axis=1)


def small_size(frame_shape: tuple[int, ...], cfg: ProposalConfig) -> tuple[int, int]:
    """(width, height) of the downscaled frame the cues work on."""
    h, w = frame_shape[:2]
    return max(1, int(w * cfg.scale)), max(1, int(h * cfg.scale))


def downscale(frame_bgr: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    """The frame at :func:`small_size`, area-averaged: what the cues (and a sign map of that input size) see."""
    return cv2.resize(frame_bgr, small_size(frame_bgr.shape, cfg), interpolation=cv2.INTER_AREA)


def candidates(frame_bgr: np.ndarray, cfg: ProposalConfig = ProposalConfig(), small: np.ndarray | None = None) -> Candidates:
    """All candidate boxes of a frame (full-frame coordinates) with their ranking features.

    ``small``: the frame already made by :func:`downscale` (e.g. shared with the sign map)."""
    h, w = frame_bgr.shape[:2]
    size = small_size(frame_bgr.shape, cfg)
    if small is None:
        small = downscale(frame_bgr, cfg)
    elif small.shape[:2] != size[::-1]:
        raise ValueError(f"small frame is {small.shape[1]}x{small.shape[0]}, the cues need {size[0]}x{size[1]}")
    maps = colour_maps(small, cfg.gain)
    found = [(ci, level, *_cue_components(cue, level, maps, cfg)) for ci, cue in enumerate(cfg.cues) for level in cue.levels]
    found = [f for f in found if len(f[3])]
    if not found:
        return Candidates(np.zeros((0, 4)), np.zeros((0, len(FEATURES))), np.zeros(0, int))
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    integrals = {"v": cv2.integral(hsv[..., 2]), "s": cv2.integral(hsv[..., 1])}
    integrals.update({name: cv2.integral(maps[name]) for name in {c.colour for c in cfg.cues}})
    cue = np.concatenate([np.full(len(f[3]), f[0]) for f in found])
    level = np.concatenate([np.full(len(f[3]), f[1], np.float64) for f in found])
    xywh, area = np.vstack([f[2] for f in found]), np.concatenate([f[3] for f in found])
    grow = np.array([c.grow for c in cfg.cues])[cue]
    cx, cy = xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2
    sw, sh = xywh[:, 2] * grow / 2, xywh[:, 3] * grow / 2  # the sign's half sizes
    feats = _features(xywh, area, level, (cx, cy, sw, sh), np.array([c.colour for c in cfg.cues])[cue], integrals, cfg)
    xyxy = np.stack([cx - sw, cy - sh, cx + sw, cy + sh], axis=1) / cfg.scale
    xyxy[:, :2] = np.floor(np.maximum(xyxy[:, :2], 0))
    xyxy[:, 2:] = np.ceil(np.minimum(xyxy[:, 2:], (w, h)))
    return Candidates(xyxy, feats, cue)


def rank(cands: Candidates, cfg: ProposalConfig, ranker: Ranker) -> np.ndarray:
    score = np.zeros(len(cands.cue))
    for ci, cue in enumerate(cfg.cues):
        sel = cands.cue == ci
        if sel.any():
            score[sel] = ranker.score(cue, cands.features[sel])
    return score


def select(order: Sequence[int], cue: np.ndarray, cfg: ProposalConfig) -> list[int]:
    """The first ``max_proposals`` of ``order`` (best first), after reserving each cue's best ``per_cue``.

    The ranker's scores are calibrated per cue: a yellow diamond scores far below a red ring, because
    most yellow blobs are sunlit leaves. Without a reserve a busy red scene crowds every yellow
    candidate out."""
    ranked = np.asarray(order, int)
    if len(ranked) <= cfg.max_proposals:
        return [int(i) for i in ranked]
    rank_in_cue = np.zeros(len(ranked), int)
    for c in np.unique(cue[ranked]):
        sel = cue[ranked] == c
        rank_in_cue[sel] = np.arange(sel.sum())
    reserved = rank_in_cue < min(cfg.per_cue, cfg.max_proposals // max(len(cfg.cues), 1))
    room = max(cfg.max_proposals - int(reserved.sum()), 0)
    rest = np.flatnonzero(~reserved)[:room]
    return [int(i) for i in ranked[np.sort(np.concatenate([np.flatnonzero(reserved), rest]))]]


def propose(frame_bgr: np.ndarray, cfg: ProposalConfig = ProposalConfig(), ranker: Ranker | None = None,
            small: np.ndarray | None = None) -> list[Proposal]:
    """Candidate sign boxes in full-frame coordinates, most sign-like first.

    ``ranker`` None loads the packaged one (a small JSON file) on every call: a loop over frames
    should load it once (``default_ranker()``) or use ``runtime.pipeline.FramePipeline``. ``small``: see
    :func:`candidates`."""
    ranker = default_ranker() if ranker is None else ranker
    cands = candidates(frame_bgr, cfg, small)
    if not len(cands.cue):
        return []
    score = rank(cands, cfg, ranker)
    keep = select(nms(cands.boxes, score.tolist(), cfg.nms_iou), cands.cue, cfg)
    return [Proposal((int(cands.boxes[i, 0]), int(cands.boxes[i, 1]), int(cands.boxes[i, 2]), int(cands.boxes[i, 3])),
                     cfg.cues[cands.cue[i]].name, float(score[i])) for i in keep]
