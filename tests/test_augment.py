"""Augmentation keeps labels meaningful: no flips, bounded changes, reproducible from the seed."""

from __future__ import annotations

import numpy as np

from train.augment import AugmentConfig, augment_batch


def _arrow(n: int = 8, size: int = 32) -> np.ndarray:
    img = np.full((n, size, size, 3), 40, np.uint8)
    img[:, size // 2 - 2:size // 2 + 2, 4:size - 8] = 230  # shaft
    img[:, size // 2 - 8:size // 2 + 8, size - 12:size - 4] = 230  # head on the right
    return img


def test_shapes_dtype_and_reproducibility():
    x = _arrow()
    a = augment_batch(x, np.random.default_rng(3))
    b = augment_batch(x, np.random.default_rng(3))
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, x)


def test_never_flips_left_right():
    # An arrow pointing right keeps more bright mass on the right half after any augmentation.
    out = augment_batch(_arrow(64), np.random.default_rng(0), AugmentConfig(brightness=0, contrast=0, blur_p=0))
    right = out[:, :, 16:].astype(int).sum(axis=(1, 2, 3))
    left = out[:, :, :16].astype(int).sum(axis=(1, 2, 3))
    assert (right > left).all()


def test_random_erasing_covers_a_patch_when_enabled():
    x = np.full((16, 32, 32, 3), 128, np.uint8)
    cfg = AugmentConfig(rotation_deg=0, zoom=0, shift=0, brightness=0, contrast=0, blur_p=0, erase_p=1.0)
    out = augment_batch(x, np.random.default_rng(1), cfg)
    changed = (np.abs(out.astype(int) - 128) > 40).any(axis=3).sum(axis=(1, 2))
    assert (changed > 0).all() and (changed < 32 * 32 * 0.35).all()


def test_a_batch_split_in_two_is_augmented_as_the_whole_batch():
    """Two processes each augmenting their half of a global batch, from the same draws, give the single process's crops."""
    from train.augment import apply, draw

    x = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    cfg = AugmentConfig(erase_p=0.5, perspective=0.1)
    d = draw(np.random.default_rng(5), 8, 32, cfg)
    whole = apply(x, d)
    halves = np.concatenate([apply(x[:4], d[:4]), apply(x[4:], d[4:])])
    assert np.array_equal(whole, halves)
