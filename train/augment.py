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
    rotation_deg: float = 12.0
    zoom: float = 0.12
    shift: float = 0.08
    brightness: float = 0.25
    contrast: float = 0.3
    blur_p: float = 0.15
    erase_p: float = 0.0  # random erasing: a grey-noise rectangle, like stickers and occluding branches
    erase_max: float = 0.3  # its largest side, as a fraction of the crop


def augment_batch(images: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Return randomly perturbed copies of uint8 (N, S, S, 3) crops."""
    n, size = len(images), images.shape[1]
    out = np.empty_like(images)
    angles = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, n)
    scales = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom, n)
    shifts = rng.uniform(-cfg.shift, cfg.shift, (n, 2)) * size
    blur = rng.random(n) < cfg.blur_p
    centre = ((size - 1) / 2, (size - 1) / 2)
    for i in range(n):
        m = cv2.getRotationMatrix2D(centre, angles[i], scales[i])
        m[:, 2] += shifts[i]
        img = cv2.warpAffine(images[i], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if blur[i]:
            img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 1.0))
        out[i] = img
    for i in np.flatnonzero(rng.random(n) < cfg.erase_p):
        eh, ew = (rng.uniform(0.1, cfg.erase_max, 2) * size).astype(int) + 1
        y, x = rng.integers(0, size - eh + 1), rng.integers(0, size - ew + 1)
        out[i, y:y + eh, x:x + ew] = rng.integers(0, 256, (eh, ew, 3), dtype=np.uint8)
    # Photometric jitter: contrast around the mean, brightness offset, then gamma.
    x = out.astype(np.float32) / 255.0
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, (n, 1, 1, 1)).astype(np.float32)
    b = rng.uniform(-cfg.brightness, cfg.brightness, (n, 1, 1, 1)).astype(np.float32) * 0.5
    x = np.clip((x - mean) * c + mean + b, 0.0, 1.0)
    gamma = np.exp(rng.uniform(-0.4, 0.4, (n, 1, 1, 1))).astype(np.float32)
    return (np.power(x, gamma) * 255.0 + 0.5).astype(np.uint8)
