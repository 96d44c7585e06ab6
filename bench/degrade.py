"""What real road frames do to a sign crop, to score a model on harder versions of a held-out split.

The GTSRB test tracks a model errs on look like these: far signs a few pixels across (downscaled to
16-20 px and blown back up), motion blur, dusk, and JPEG-compressed camera frames. Each function
maps uint8 RGB crops (N, S, S, 3) to crops of the same shape; none is random, so scores repeat.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def low_resolution(px: int) -> Callable[[np.ndarray], np.ndarray]:
    def degrade(crops: np.ndarray) -> np.ndarray:
        s = crops.shape[1]
        return np.stack([cv2.resize(cv2.resize(c, (px, px), interpolation=cv2.INTER_AREA), (s, s),
                                    interpolation=cv2.INTER_LINEAR) for c in crops])

    return degrade


def motion_blur(length: int) -> Callable[[np.ndarray], np.ndarray]:
    kernel = np.full((1, length), 1.0 / length, np.float32)  # horizontal: the car moves

    def degrade(crops: np.ndarray) -> np.ndarray:
        return np.stack([cv2.filter2D(c, -1, kernel, borderType=cv2.BORDER_REFLECT) for c in crops])

    return degrade


def darker(factor: float, gamma: float = 1.3) -> Callable[[np.ndarray], np.ndarray]:
    def degrade(crops: np.ndarray) -> np.ndarray:
        x = crops.astype(np.float32) / 255.0
        return (np.clip(np.power(x, gamma) * factor, 0, 1) * 255 + 0.5).astype(np.uint8)

    return degrade


def jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def degrade(crops: np.ndarray) -> np.ndarray:
        out = []
        for c in crops:
            ok, buf = cv2.imencode(".jpg", c[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            back = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
            out.append(back[..., ::-1] if back is not None else c)
        return np.ascontiguousarray(np.stack(out))

    return degrade


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "16px": low_resolution(16),
    "20px": low_resolution(20),
    "blur5": motion_blur(5),
    "dark": darker(0.35),
    "jpeg20": jpeg(20),
}
