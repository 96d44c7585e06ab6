"""The sign map's training crops and what it learns from them.

A crop of a frame (shrunk to the map's scale), zoomed and maybe mirrored, and its target at STRIDE: a Gaussian
at each sign's centre and the sign's side. With a sign dataset, signs of it are pasted into sign-free places
of the crop and marked alike. ``train.frames.sign_map`` fits the map on these.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.annotations import Annotation
from runtime.errors import ConfigError
from train.data.dataset import load_dataset

SCALE = 0.5  # the map sees the frame at half size by default, like the colour cues (--scale: docs/decisions.md)
STRIDE = 4
SIZE_UNIT = 8.0  # the size head learns log2(side) / 8: the same 0..1-ish range as the heat, one int8 output scale
PASTE_SIDES = (8.0, 64.0)  # pasted signs' sides on the map's input: 16-128 frame pixels at half size, GTSDB's range
PASTE_MARGIN = 0.1  # around the sign in a pasted crop (GTSRB keeps about this much)
PASTE_POOL_SIZE = 48  # side of the pool's crops; larger signs are upscaled from it
# Training crops cut at 1 - ZOOM to 1 / (1 - ZOOM) of the frame's scale, half of them mirrored: the 10 best boxes
# of a light map proposed 0.764 and 0.738 of two held-out folds' signs, 0.733 and 0.701 with neither (docs/decisions.md).
ZOOM = 0.25
FLIP = True


def mark_sign(t: np.ndarray, cx: float, cy: float, side: float, scale: float = SCALE) -> None:
    """Add one sign to a target (the cells of the map's input at STRIDE) in place: its Gaussian, and its side.

    ``cx``, ``cy`` and ``side`` are in pixels of the map's input, the frame at ``scale`` (the side is learned in
    frame pixels)."""
    gh, gw = t.shape[:2]
    cx, cy, cells = cx / STRIDE, cy / STRIDE, side / STRIDE
    yy, xx = np.mgrid[0:gh, 0:gw]
    sigma = max(cells / 4, 0.7)
    t[..., 0] = np.maximum(t[..., 0], np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)))
    ix, iy = int(cx), int(cy)
    if 0 <= iy < gh and 0 <= ix < gw:
        t[iy, ix] = (1.0, np.log2(side / scale) / SIZE_UNIT, 1.0)


PASTE_SAMPLING = ("images", "classes")


def pool_indices(labels: np.ndarray, count: int, seed: int, sampling: str = "images") -> np.ndarray:
    """Which of a dataset's images (by label) make a paste pool of up to ``count``, sorted.

    ``images``: a random ``count`` of them, so classes are as common as in the dataset (GTSRB: 10 times more
    "speed limit (50)" than "end of all limits"). ``classes``: as even a share of every class as ``count``
    allows (a class with fewer images gives all of them, the others share the rest), so rare classes are
    pasted as often as common ones."""
    if sampling not in PASTE_SAMPLING:
        raise ConfigError(f"paste sampling {sampling!r} is not one of {', '.join(PASTE_SAMPLING)}")
    rng = np.random.default_rng(seed)
    if sampling == "images":
        return np.sort(rng.permutation(len(labels))[:count])
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    index = np.concatenate(members)
    rank = np.concatenate([np.arange(len(m)) for m in members])  # place within its class
    order = np.lexsort((rng.random(len(index)), rank))  # every class's first, then every class's second, ...
    return np.sort(index[order[:count]])


def load_paste_pool(path: Path, count: int, seed: int, size: int = PASTE_POOL_SIZE, progress: bool = True,
                    sampling: str = "images") -> tuple[np.ndarray, dict[str, Any]]:
    """Up to ``count`` sign crops (BGR, the sign with PASTE_MARGIN around it) from a sign dataset in any known
    layout, drawn as :func:`pool_indices` says, and what they are (for the map's sidecar)."""
    data = load_dataset(path, subset="train", size=size, margin=PASTE_MARGIN, progress=progress)
    pick = pool_indices(data.labels, count, seed, sampling)
    pool = np.ascontiguousarray(data.images[pick][..., ::-1])
    # "pixels" names the pool by what it holds: a copied or remounted dataset changes its files' times (and so
    # "fingerprint") but not the signs a fit pastes, so a fit resumes on it.
    return pool, {"source": str(Path(path).resolve()), "fingerprint": data.fingerprint,
                  "pixels": hashlib.sha256(pool.tobytes()).hexdigest()[:16], "images": len(pool), "sampling": sampling}


def paste_signs(rng: np.random.Generator, img: np.ndarray, t: np.ndarray, pool: np.ndarray, count: int,
                scale: float = SCALE) -> int:
    """Paste ``count`` signs of ``pool`` into sign-free places of ``img`` (a crop of the map's input, the frame at
    ``scale``; BGR uint8, changed in place) and mark them in its target ``t``; how many found a place.

    Each sign gets a side drawn log-uniformly from PASTE_SIDES, a brightness pulled halfway toward the place's, and
    soft elliptical edges, so that the map learns the sign and not the pasted square's border."""
    import cv2

    h, w = img.shape[:2]
    done = 0
    for _ in range(count):
        side = float(np.exp(rng.uniform(*np.log(PASTE_SIDES))))
        full = round(side * (1 + 2 * PASTE_MARGIN))
        if full > min(h, w):
            continue
        for _try in range(5):  # a place away from every sign already there (the heat is < 0.05 over it)
            x0, y0 = int(rng.integers(0, w - full + 1)), int(rng.integers(0, h - full + 1))
            if t[y0 // STRIDE:-(-(y0 + full) // STRIDE), x0 // STRIDE:-(-(x0 + full) // STRIDE), 0].max(initial=0.0) < 0.05:
                break
        else:
            continue
        patch = cv2.resize(pool[int(rng.integers(len(pool)))], (full, full), interpolation=cv2.INTER_AREA).astype(np.float32)
        region = img[y0:y0 + full, x0:x0 + full].astype(np.float32)
        gain = float(np.clip(np.sqrt((region.mean() + 1) / (patch.mean() + 1)) * rng.uniform(0.8, 1.2), 0.4, 1.6))
        disc = np.zeros((full, full), np.float32)
        c, r = (full - 1) // 2, max(1, round(side * 0.62))  # reaches a triangle's corners, not the crop's
        cv2.ellipse(disc, (c, c), (r, r), 0, 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(disc, (0, 0), max(full / 24, 0.5))[..., None]
        img[y0:y0 + full, x0:x0 + full] = np.clip(alpha * patch * gain + (1 - alpha) * region, 0, 255).astype(np.uint8)
        mark_sign(t, x0 + full / 2, y0 + full / 2, side, scale)
        done += 1
    return done


def crops(rng: np.random.Generator, smalls: list[np.ndarray], signs: list[list[Annotation]], crop: int, n: int,
          pool: np.ndarray | None = None, paste_rate: float = 0.0, zoom: float = 0.0,
          flip: bool = False, scale: float = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """A batch of training crops of the frames at ``scale`` (``smalls``) and their targets.

    ``zoom``: each crop is cut at a scale drawn log-uniformly from 1 - zoom to 1 / (1 - zoom) of the frame's (its
    signs' sides scaled alike); ``flip``: half of the crops mirrored left to right (a mirrored sign is still a sign
    here; the classifier, which reads which way an arrow points, never sees these)."""
    import cv2

    xs, ys = [], []
    for _ in range(n):
        k = int(rng.integers(len(smalls)))
        img = smalls[k]
        h, w = img.shape[:2]
        z = float(np.exp(rng.uniform(np.log(1 - zoom), -np.log(1 - zoom)))) if zoom else 1.0
        win = min(round(crop / z), h, w)  # the window cut from the frame, resized to the crop
        z = crop / win
        margin = max(1, round(16 / z))
        if signs[k] and rng.random() < 0.6:  # around a sign
            a = signs[k][int(rng.integers(len(signs[k])))]
            cx, cy = (a.box[0] + a.box[2]) / 2 * scale, (a.box[1] + a.box[3]) / 2 * scale
            left, top = cx - float(rng.integers(margin, win - margin)), cy - float(rng.integers(margin, win - margin))
        else:
            left, top = float(rng.integers(0, w - win + 1)), float(rng.integers(0, h - win + 1))
        x0, y0 = int(np.clip(left, 0, w - win)), int(np.clip(top, 0, h - win))
        patch = img[y0:y0 + win, x0:x0 + win]
        patch = cv2.resize(patch, (crop, crop), interpolation=cv2.INTER_AREA if z < 1 else cv2.INTER_LINEAR) if win != crop else patch.copy()
        mirrored = flip and rng.random() < 0.5
        if mirrored:
            patch = np.ascontiguousarray(patch[:, ::-1])
        target = np.zeros((crop // STRIDE, crop // STRIDE, 3), np.float32)
        for a in signs[k]:
            x1, y1, x2, y2 = (v * scale for v in a.box)
            cx, cy = ((x1 + x2) / 2 - x0) * z, ((y1 + y2) / 2 - y0) * z
            mark_sign(target, crop - cx if mirrored else cx, cy, max(x2 - x1, y2 - y1) * z, scale)
        if pool is not None and paste_rate > 0:
            paste_signs(rng, patch, target, pool, int(rng.poisson(paste_rate)), scale)
        x = patch.astype(np.float32) / 255.0
        xs.append(np.clip(x * rng.uniform(0.6, 1.4) + rng.uniform(-0.1, 0.1), 0, 1))
        ys.append(target)
    return np.stack(xs), np.stack(ys)


def crop_batches(rng: np.random.Generator, count: int, smalls: list[np.ndarray], signs: list[list[Annotation]],
                 crop: int, n: int, pool: np.ndarray | None = None, paste_rate: float = 0.0, zoom: float = 0.0,
                 flip: bool = False, scale: float = SCALE, ahead: int = 2) -> Generator[tuple[np.ndarray, np.ndarray, dict[str, Any]], None, None]:
    """``count`` batches of :func:`crops` (the same as calling it ``count`` times), each with ``rng``'s state after it
    (what a checkpoint records), drawn up to ``ahead`` batches ahead on a thread of their own: the crops' Python and
    OpenCV work overlaps the training step instead of leaving a core idle. An error while drawing is raised here."""
    made: queue.Queue[tuple[np.ndarray, np.ndarray, dict[str, Any]] | BaseException] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def hand_on(item: tuple[np.ndarray, np.ndarray, dict[str, Any]] | BaseException) -> bool:
        while not stop.is_set():
            try:
                made.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def draw() -> None:
        try:
            for _ in range(count):
                x, y = crops(rng, smalls, signs, crop, n, pool, paste_rate, zoom, flip, scale)
                if not hand_on((x, y, dict(rng.bit_generator.state))):
                    return
        except BaseException as e:  # noqa: BLE001 -- not swallowed: the consumer raises it (also a stand-in's Ctrl-C)
            hand_on(e)

    threading.Thread(target=draw, name="map-crops", daemon=True).start()
    try:
        for _ in range(count):
            item = made.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
