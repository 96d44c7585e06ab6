"""Sign-safe augmentation on uint8 RGB crops, in numpy/OpenCV so every Keras backend can use it.

Small rotations, zoom, shifts, brightness/contrast/gamma and blur. Never a horizontal flip:
it turns "keep left" into "keep right" and "turn left ahead" into "turn right ahead".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Every range the augmentation draws from; a run records all of it in its metadata."""

    rotation_deg: float = 12.0
    zoom: float = 0.12  # scale 1 +- zoom: how far off a proposal's box may be
    shift: float = 0.08  # a fraction of the crop side
    brightness: float = 0.25  # offset of up to half this, on [0, 1] pixels
    contrast: float = 0.3  # factor 1 +- contrast around the crop's mean
    gamma: float = 0.4  # exponent exp(+-gamma)
    blur_p: float = 0.15
    blur_sigma: tuple[float, float] = (0.4, 1.0)  # Gaussian blur sigma range (3x3 kernel)
    erase_p: float = 0.0  # random erasing (--erase): a noise rectangle, like stickers and occluding branches
    erase_max: float = 0.3  # its largest side, as a fraction of the crop
    perspective: float = 0.0  # corners moved by up to this fraction of the side (a sign seen at an angle)

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        return cls(**{**data, "blur_sigma": tuple(data.get("blur_sigma", cls.blur_sigma))})


@dataclass(frozen=True)
class Draws:
    """The random choices of a batch, one row per image: drawn once for a whole (global) batch, so that its images are
    augmented alike however the batch is split over processes."""

    angles: np.ndarray
    scales: np.ndarray
    shifts: np.ndarray  # (n, 2), in pixels
    blur: np.ndarray  # bool
    blur_sigma: np.ndarray
    jitter: np.ndarray | None  # (n, 4, 2) perspective corner moves, in pixels
    erase: np.ndarray  # bool
    erase_box: np.ndarray  # (n, 4): height, width, top, left
    erase_seed: np.ndarray  # the noise each erased patch is filled with
    contrast: np.ndarray
    brightness: np.ndarray
    gamma: np.ndarray

    def __getitem__(self, sel: slice | np.ndarray) -> Draws:
        picked: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in picked.items():
            if v is not None:
                picked[k] = v[sel]
        return Draws(**picked)


def draw(rng: np.random.Generator, n: int, size: int, cfg: AugmentConfig = AugmentConfig()) -> Draws:
    """Every random choice for ``n`` crops of ``size`` pixels."""
    eh, ew = (rng.uniform(0.1, cfg.erase_max, (n, 2)) * size).astype(int).T + 1
    top, left = (rng.random((2, n)) * (size - np.stack([eh, ew]) + 1)).astype(int)
    return Draws(
        angles=rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, n), scales=rng.uniform(1 - cfg.zoom, 1 + cfg.zoom, n),
        shifts=rng.uniform(-cfg.shift, cfg.shift, (n, 2)) * size, blur=rng.random(n) < cfg.blur_p,
        blur_sigma=rng.uniform(*cfg.blur_sigma, n),
        jitter=rng.uniform(-cfg.perspective, cfg.perspective, (n, 4, 2)) * size if cfg.perspective else None,
        erase=rng.random(n) < cfg.erase_p, erase_box=np.stack([eh, ew, top, left], axis=1),
        erase_seed=rng.integers(0, 2**32, n, dtype=np.uint64),
        contrast=rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, n), brightness=rng.uniform(-cfg.brightness, cfg.brightness, n) * 0.5,
        gamma=np.exp(rng.uniform(-cfg.gamma, cfg.gamma, n)))


def apply(images: np.ndarray, d: Draws) -> np.ndarray:
    """Perturbed copies of uint8 (N, S, S, 3) crops, by the choices in ``d`` (one row per image)."""
    n, size = len(images), images.shape[1]
    out = np.empty_like(images)
    centre = ((size - 1) / 2, (size - 1) / 2)
    corners = np.array([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]], np.float32)
    for i in range(n):
        m = cv2.getRotationMatrix2D(centre, float(d.angles[i]), float(d.scales[i]))
        m[:, 2] += d.shifts[i]
        img = cv2.warpAffine(images[i], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if d.jitter is not None:
            h = cv2.getPerspectiveTransform(corners, (corners + d.jitter[i]).astype(np.float32))
            img = cv2.warpPerspective(img, h, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if d.blur[i]:
            img = cv2.GaussianBlur(img, (3, 3), float(d.blur_sigma[i]))
        out[i] = img
    for k in np.flatnonzero(d.erase):
        eh, ew, top, left = (int(v) for v in d.erase_box[k])
        out[k, top:top + eh, left:left + ew] = np.random.default_rng(int(d.erase_seed[k])).integers(0, 256, (eh, ew, 3),
                                                                                                       dtype=np.uint8)
    # Photometric jitter: contrast around the mean, brightness offset, then gamma.
    x = out.astype(np.float32) / 255.0
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    c = d.contrast.astype(np.float32).reshape(n, 1, 1, 1)
    b = d.brightness.astype(np.float32).reshape(n, 1, 1, 1)
    x = np.clip((x - mean) * c + mean + b, 0.0, 1.0)
    return (np.power(x, d.gamma.astype(np.float32).reshape(n, 1, 1, 1)) * 255.0 + 0.5).astype(np.uint8)


def augment_batch(images: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Randomly perturbed copies of uint8 (N, S, S, 3) crops."""
    return apply(images, draw(rng, len(images), images.shape[1], cfg))
