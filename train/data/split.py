"""Validation splits that do not lie: whole physical tracks are held out, stratified by class."""

from __future__ import annotations

import numpy as np


def track_split(labels: np.ndarray, tracks: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``val_fraction`` of each class's tracks (at least one where a class has two or more).

    Returns:
        (train_indices, val_indices), sorted.
    """
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(tracks, return_inverse=True)
    # A track shows one physical sign, so it has one class: take the most common label in it.
    track_label = np.array([np.bincount(labels[inverse == t]).argmax() for t in range(len(uniq))])
    val_tracks: list[int] = []
    for c in np.unique(track_label):
        ts = np.flatnonzero(track_label == c)
        if len(ts) < 2:
            continue
        n_val = min(len(ts) - 1, max(1, round(val_fraction * len(ts))))
        val_tracks.extend(rng.permutation(ts)[:n_val])
    is_val = np.isin(inverse, val_tracks)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def random_split(labels: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random image split, for sources without track ids (CIFAR-10, pickles)."""
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx)))) if len(idx) > 1 else 0
        val.extend(rng.permutation(idx)[:n_val])
    is_val = np.zeros(len(labels), bool)
    is_val[np.asarray(val, dtype=np.int64)] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def balanced_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices with the classes as equally represented as the data allows."""
    rng = np.random.default_rng(seed)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)}
    picked: list[int] = []
    while len(picked) < n and any(per_class.values()):
        for c in list(per_class):
            if per_class[c] and len(picked) < n:
                picked.append(per_class[c].pop())
    return np.sort(np.asarray(picked, dtype=np.int64))
