"""Sign-safe augmentation on uint8 RGB crops, in numpy/OpenCV so every Keras backend can use it.

Small rotations, zoom, shifts, brightness/contrast/gamma and blur. Never a horizontal flip:
it turns "keep left" into "keep right" and "turn left ahead" into "turn right ahead".
"""

from __future__ import annotations

from dataclasses import dataclass

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


def augment_batch(images: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Return randomly perturbed copies of uint8 (N, S, S, 3) crops."""
    n, size = len(images), images.shape[1]
    out = np.empty_like(images)
    angles = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, n)
    scales = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom, n)
    shifts = rng.uniform(-cfg.shift, cfg.shift, (n, 2)) * size
    blur = rng.random(n) < cfg.blur_p
    centre = ((size - 1) / 2, (size - 1) / 2)
    corners = np.array([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]], np.float32)
    jitter = rng.uniform(-cfg.perspective, cfg.perspective, (n, 4, 2)) * size if cfg.perspective else None
    for i in range(n):
        m = cv2.getRotationMatrix2D(centre, angles[i], scales[i])
        m[:, 2] += shifts[i]
        img = cv2.warpAffine(images[i], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if jitter is not None:
            h = cv2.getPerspectiveTransform(corners, (corners + jitter[i]).astype(np.float32))
            img = cv2.warpPerspective(img, h, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if blur[i]:
            img = cv2.GaussianBlur(img, (3, 3), rng.uniform(*cfg.blur_sigma))
        out[i] = img
    for k in np.flatnonzero(rng.random(n) < cfg.erase_p):
        eh, ew = (int(v) + 1 for v in rng.uniform(0.1, cfg.erase_max, 2) * size)
        top, left = int(rng.integers(0, size - eh + 1)), int(rng.integers(0, size - ew + 1))
        out[k, top:top + eh, left:left + ew] = rng.integers(0, 256, (eh, ew, 3), dtype=np.uint8)
    # Photometric jitter: contrast around the mean, brightness offset, then gamma.
    x = out.astype(np.float32) / 255.0
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, (n, 1, 1, 1)).astype(np.float32)
    b = rng.uniform(-cfg.brightness, cfg.brightness, (n, 1, 1, 1)).astype(np.float32) * 0.5
    x = np.clip((x - mean) * c + mean + b, 0.0, 1.0)
    gamma = np.exp(rng.uniform(-cfg.gamma, cfg.gamma, (n, 1, 1, 1))).astype(np.float32)
    return (np.power(x, gamma) * 255.0 + 0.5).astype(np.uint8)
