"""A learned proposal source: a tiny fully-convolutional "sign here" map over a downscaled frame.

The colour cues miss signs no colour threshold separates (solid red "stop" and "no entry", the
white end-of-limit signs, washed-out signs). The map, fitted on annotated frames by
``python -m train.frames.sign_map``, marks sign centres on a stride-``stride`` grid of the downscaled
frame, with the sign's side (log2 in frame pixels, divided by ``size_unit``) at each centre. Its local maxima above
``min_score`` become proposals of cue ``"map"``, beside the colour cues' (a few a frame: the
classifier and its background class decide what they are). Runs on TFLite, like a build; its
sidecar records everything else (input size, scale, stride, the frames it was fitted on).

A map may carry a **band**: the same network at a larger scale over the rows and columns of the frame where
the fitting frames' small signs were (the rows about the horizon), a build of its own that the map's
sidecar names by file and SHA-256. Its proposals have cue ``"band"``; ``runtime.pipeline.Budget.band_boxes``
says how many a frame reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.backends import TFLiteBackend
from runtime.builds import file_sha256, sidecar_of
from runtime.errors import BuildError
from runtime.proposals import Proposal

MAP_FORMAT = "signkit-signmap/1"
MAP_FILE = "sign_map_int8.tflite"
MAP_CUE = "map"
BAND_CUE = "band"
BAND_FILE = "sign_map_band_int8.tflite"
MAP_KEYS = ("input", "stride", "min_score", "top_k", "size_unit")
# A map's sides are read this much larger than it learned them: its boxes are 0.95-0.98 of a held-out sign's side
# (median), and the frame model reads a box a little looser better (fold A, three maps: `pi` F1 +0.002 to +0.005, the
# demo +0.007; 1.02 and 1.06 did not gain with every map: docs/decisions.md)
READ_SIDE = 1.04


def side_reading(fit_scale: float, scale: float) -> float:
    """How many frame pixels a learned side is read as, for a map fitted at ``fit_scale`` of the frame that runs at
    ``scale`` (export.sign_map --scale, or its band): the sides it learned at the one size, read at the other, and
    READ_SIDE."""
    return READ_SIDE * float(fit_scale) / float(scale)


def read_map_metadata(path: Path) -> dict[str, Any]:
    """The sidecar of a sign-map build, checked: its format, its keys, and that it describes this very file.

    Raises:
        BuildError: a missing, foreign or stale sidecar (one line naming the file and the fix).
    """
    side = sidecar_of(path)
    if not path.is_file():
        raise BuildError(f"sign map {path} not found; fit one with `python -m train.frames.sign_map` and export it with "
                         f"`python -m export.sign_map`")
    if not side.is_file():
        raise BuildError(f"{path} has no sidecar {side.name}; export it again with `python -m export.sign_map`")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BuildError(f"{side} is not valid JSON ({err}); fit the map again") from None
    if not isinstance(meta, dict) or meta.get("format") != MAP_FORMAT:
        raise BuildError(f"{side} is not a sign-map sidecar (format {meta.get('format') if isinstance(meta, dict) else None!r}); "
                         "pass a map from `python -m train.frames.sign_map`, not a classifier build")
    missing = [k for k in MAP_KEYS if k not in meta]
    if missing:
        raise BuildError(f"{side} lacks {', '.join(missing)}; fit the map again")
    if meta.get("model_sha256") != file_sha256(path):
        raise BuildError(f"{path} is not the model its sidecar {side.name} describes (SHA-256 differs); fit the map again")
    return meta


def _vertex(before: np.ndarray, at: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Where a parabola through three evenly spaced samples peaks, in samples from the middle one (-0.5..0.5)."""
    curve = 2 * at - before - after
    return np.clip(np.where(curve > 1e-6, (after - before) / (2 * np.maximum(curve, 1e-6)), 0.0), -0.5, 0.5)


def decode(out: np.ndarray, stride: int, min_score: float, top_k: int, sx: float, sy: float,
           size_unit: float = 1.0, side_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2 in frame pixels) and scores of a map's output (h, w, 2: heat, log2 side / size_unit).

    A box per 3x3 local maximum of the heat above ``min_score``, the best ``top_k``; ``sx``/``sy``: frame
    pixels per map-input pixel. (The side is learned divided by ``size_unit`` so that both channels share
    one int8 output scale: heat 0..1, side about 0.25..1.25.) ``side_scale``: the map was fitted at this
    many times the frame scale it runs at, so the sides it learned are read times that."""
    heat = np.ascontiguousarray(out[..., 0], np.float32)
    peak = (heat >= cv2.dilate(heat, np.ones((3, 3), np.uint8))) & (heat > min_score)
    ys, xs = np.nonzero(peak)
    scores = heat[ys, xs]
    keep = np.argsort(-scores, kind="stable")[:top_k]
    ys, xs, scores = ys[keep], xs[keep], scores[keep]
    side = np.exp2(np.clip(out[ys, xs, 1] * size_unit, 2.0, 10.0)) * side_scale  # frame pixels (4..1024 as learned)
    # the centre between cells: a parabola through the peak and its neighbours across and down (a cell is 8 frame pixels
    # at half scale, a fifth of a 40-pixel sign; the 10 best boxes found 0.764 -> 0.784, 0.738 -> 0.761 of two folds' signs)
    pad = np.pad(heat, 1, mode="edge")
    cx = (xs + 0.5 + _vertex(pad[ys + 1, xs], pad[ys + 1, xs + 1], pad[ys + 1, xs + 2])) * stride * sx
    cy = (ys + 0.5 + _vertex(pad[ys, xs + 1], pad[ys + 1, xs + 1], pad[ys + 2, xs + 1])) * stride * sy
    boxes = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1) if len(side) else np.zeros((0, 4))
    return boxes, scores


def region_pixels(region: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """A region given as fractions of the frame (x1, y1, x2, y2), in pixels of an ``height`` x ``width`` frame."""
    x1, y1, x2, y2 = (round(f * n) for f, n in zip(region, (width, height, width, height)))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def map_input(frame_bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frame resized to a map's input (the fit shrinks its frames with it too): area-averaged where the frame is a
    whole multiple of it (OpenCV's fast path), bilinear otherwise. (Area-averaging 1360x800 to 848x496 takes 6.8 ms a frame
    against 0.7 bilinear; the map's 10 best boxes found 233 / 368 held-out signs with it, 233 / 370 without.)"""
    fh, fw = frame_bgr.shape[:2]
    whole = fh % height == 0 and fw % width == 0 and fh // height == fw // width
    return cv2.resize(frame_bgr, (width, height), interpolation=cv2.INTER_AREA if whole else cv2.INTER_LINEAR)


class SignMap:
    """A sign-map build opened for inference. One call at a time per instance (its interpreter is locked)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        self.meta = read_map_metadata(self.path)
        self.height, self.width = (int(v) for v in self.meta["input"][:2])
        self.stride = int(self.meta["stride"])
        self.min_score = float(self.meta["min_score"])
        self.top_k = int(self.meta["top_k"])
        self.size_unit = float(self.meta["size_unit"])
        # exported at another frame scale than it was fitted at (export.sign_map --scale): its sides are read at that
        self.side_scale = side_reading(self.meta.get("fit_scale", self.meta["scale"]), self.meta["scale"])
        self.macs = int(self.meta.get("macs") or 0)  # one frame through the map (0: exported before it was recorded)
        # a band's map sees only this part of the frame (fractions x1, y1, x2, y2); None: the whole frame
        region = self.meta.get("region")
        self.region: tuple[float, ...] | None = tuple(float(v) for v in region) if region else None
        self.cue = BAND_CUE if self.region is not None else MAP_CUE
        self.backend = TFLiteBackend(self.path, threads)
        if self.backend.input_shape != (self.height, self.width, 3):
            raise BuildError(f"{self.path}: sidecar says input {self.height}x{self.width}x3 but the model takes "
                             f"{self.backend.input_shape}; fit the map again")
        self.band: SignMap | None = None  # the same map at a larger scale over the small signs' band
        band = self.meta.get("band")
        if band:
            band_path = self.path.with_name(band["file"])
            if not band_path.is_file():
                raise BuildError(f"{self.path}: its band {band_path.name} is missing; copy it beside the map or export "
                                 f"the map again with `python -m export.sign_map`")
            if file_sha256(band_path) != band["sha256"]:
                raise BuildError(f"{band_path} is not the band {sidecar_of(self.path).name} names (SHA-256 differs); export the "
                                 f"map again with `python -m export.sign_map`")
            self.band = SignMap(band_path, threads)
            if self.band.region is None:
                raise BuildError(f"{band_path}: its sidecar names no region of the frame; export the map again")

    @property
    def fitted_on(self) -> list[dict[str, Any]]:
        """The frames that fitted the map, per folder (``runtime.annotations.frames_fitted`` reads it)."""
        if "fitted_on" in self.meta:
            return list(self.meta["fitted_on"])
        return [{"gt_sha256": self.meta.get("frames_gt_sha256"), "frames": self.meta.get("frames") or []}]

    def propose(self, frame_bgr: np.ndarray, small: np.ndarray | None = None, top_k: int | None = None) -> list[Proposal]:
        """The map's proposals on a checked uint8 BGR frame (any size: it is resized to the map's input), its best
        ``top_k`` (None: its own cap).

        ``small``: the frame already resized to the map's input as ``map_input`` would (the colour cues' half-size
        frame, when it has that size), so it is not resized twice. A band's map crops its region of the frame first."""
        h, w = frame_bgr.shape[:2]
        ox = oy = 0
        if self.region is not None:
            ox, oy, x2, y2 = region_pixels(self.region, h, w)
            small = map_input(frame_bgr[oy:y2, ox:x2], self.width, self.height)
            sx, sy = (x2 - ox) / self.width, (y2 - oy) / self.height
        else:
            if small is None or small.shape[:2] != (self.height, self.width):
                small = map_input(frame_bgr, self.width, self.height)
            sx, sy = w / self.width, h / self.height
        x = small[None].astype(np.float32) * np.float32(1 / 255)
        out = self.backend.run(x)[0]
        boxes, scores = decode(out, self.stride, self.min_score, self.top_k if top_k is None else top_k, sx, sy,
                               self.size_unit, self.side_scale)
        props = []
        for (x1, y1, x2, y2), s in zip(boxes + (ox, oy, ox, oy), scores):
            box = (max(0, int(np.floor(x1))), max(0, int(np.floor(y1))), min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2))))
            if box[2] > box[0] and box[3] > box[1]:
                props.append(Proposal(box, self.cue, float(s)))
        return props
