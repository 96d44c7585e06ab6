"""The one preprocessing function shared by training, export calibration and the runtime.

A model sees ``to_model_input(crop_and_resize(image, box, spec), spec)``, whether the crop
comes from a GTSRB training image or a live camera frame. Training caches the output of
``crop_and_resize`` (uint8 RGB) and augments it before calling ``to_model_input``.

Boxes are ``(x1, y1, x2, y2)`` in pixels with ``x2``/``y2`` exclusive; datasets whose boxes
are inclusive (GTSRB ``Roi.*``, GTSDB ``gt.txt``) add one when they read them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Bump when the pixels that come out of crop_and_resize/to_model_input change: caches key on it.
PREPROCESS_VERSION = 1

COLOURS = ("rgb", "gray")
NORMALIZATIONS = ("standardize", "unit", "symmetric")
CONTRASTS = ("none", "clahe")
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PreprocessSpec:
    """How a crop becomes a model input.

    Attributes:
        size: square input side in pixels.
        colour: "rgb" (3 channels) or "gray" (1 channel, 0.299 R + 0.587 G + 0.114 B).
        normalization: "standardize" (per image: zero mean, unit std), "unit" ([0, 1]) or
            "symmetric" ([-1, 1]).
        margin: fraction of the box's width/height added on every side before cropping
            (GTSRB images keep about 10 % around the sign).
        contrast: "none", or "clahe": contrast-limited adaptive histogram equalisation of the crop's
            lightness (LAB), in 4x4 tiles, before the normalisation (dark and backlit signs).
    """

    size: int = 32
    colour: str = "rgb"
    normalization: str = "standardize"
    margin: float = 0.1
    version: int = PREPROCESS_VERSION
    contrast: str = "none"

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {COLOURS}, not {self.colour!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, not {self.normalization!r}")
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, not {self.contrast!r}")
        if self.size < 1 or self.margin < 0:
            raise ValueError("size must be >= 1 and margin >= 0")

    @property
    def channels(self) -> int:
        return 1 if self.colour == "gray" else 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def expand_box(box: Sequence[float], margin: float, width: int, height: int) -> Box:
    """Grow ``box`` by ``margin`` of its size on every side and clamp it to the image.

    Raises:
        ValueError: the box has no area or lies wholly outside the image.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if not (w > 0 and h > 0):
        raise ValueError(f"box {tuple(box)} has no area")
    nx1 = max(0, int(np.floor(x1 - margin * w)))
    ny1 = max(0, int(np.floor(y1 - margin * h)))
    nx2 = min(width, int(np.ceil(x2 + margin * w)))
    ny2 = min(height, int(np.ceil(y2 + margin * h)))
    if nx2 <= nx1 or ny2 <= ny1:
        raise ValueError(f"box {tuple(box)} lies outside the {width}x{height} image")
    return nx1, ny1, nx2, ny2


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize: area averaging when shrinking (no aliasing), bilinear when enlarging."""
    import cv2  # on first use, so that ``import runtime`` needs numpy alone

    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h * w >= size * size else cv2.INTER_LINEAR
    out = cv2.resize(image, (size, size), interpolation=interp)
    return out if out.ndim == 3 else out[..., None]


def crop_and_resize(image: np.ndarray, box: Sequence[float] | None, spec: PreprocessSpec, *, order: str = "rgb") -> np.ndarray:
    """Crop ``box`` (plus the spec's margin) out of an 8-bit colour image and resize it.

    Args:
        image: uint8 HxWx3 image in ``order`` ("rgb" or "bgr", OpenCV frames are BGR).
        box: ``(x1, y1, x2, y2)``, or None for the whole image.
        spec: the model's preprocessing spec.

    Returns:
        uint8 (size, size, 3) RGB crop.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    if box is not None:
        x1, y1, x2, y2 = expand_box(box, spec.margin, image.shape[1], image.shape[0])
        image = image[y1:y2, x1:x2]
    out = resize(image, spec.size)
    if order == "bgr":
        out = out[..., ::-1]
    elif order != "rgb":
        raise ValueError(f"order must be 'rgb' or 'bgr', not {order!r}")
    return np.ascontiguousarray(out)


_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


CLAHE_CLIP, CLAHE_TILES = 2.0, (4, 4)


def equalise(crops: np.ndarray) -> np.ndarray:
    """CLAHE on the lightness of uint8 RGB crops (N,H,W,3), colour kept."""
    import cv2  # on first use, as in resize

    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=CLAHE_TILES)  # one per call: not shared between threads
    out = np.empty_like(crops)
    for i, c in enumerate(crops):
        lab = cv2.cvtColor(c, cv2.COLOR_RGB2LAB)
        lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
        out[i] = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return out


def to_model_input(crops: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Turn uint8 RGB crops (N,H,W,3 or H,W,3) into the float32 tensor the model was trained on."""
    if spec.contrast == "clahe":
        c = np.asarray(crops, dtype=np.uint8)
        crops = equalise(c[None])[0] if c.ndim == 3 else equalise(c)
    x = np.asarray(crops, dtype=np.float32)
    single = x.ndim == 3
    if single:
        x = x[None]
    if spec.colour == "gray":
        x = (x @ _GRAY)[..., None]
    if spec.normalization == "standardize":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        # A floor on the std keeps flat (blank) crops from being blown up into noise.
        std = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 8.0)
        x = (x - mean) / std
    elif spec.normalization == "unit":
        x = x / 255.0
    else:
        x = x / 127.5 - 1.0
    return x[0] if single else x


def preprocess(image: np.ndarray, box: Sequence[float] | None, spec: PreprocessSpec, *, order: str = "rgb") -> np.ndarray:
    """Crop, resize, convert colour and normalise one ROI: exactly what training fed the model."""
    return to_model_input(crop_and_resize(image, box, spec, order=order), spec)
