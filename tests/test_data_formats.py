"""Every on-disk layout loads into the same Split; detection, caching and track splits hold."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.preprocess import PreprocessSpec, crop_and_resize
from train.data import FORMATS, detect_format, load_dataset, random_split, track_split
from train.data.formats import decode_image


def _check_split(split, n_classes: int = 4, size: int = 24) -> None:
    assert split.images.dtype == np.uint8 and split.images.shape[1:] == (size, size, 3)
    assert split.labels.dtype == np.int64 and len(split.labels) == len(split.images)
    assert set(np.unique(split.labels)) == set(range(n_classes))
    assert split.images.std() > 5  # real pixels, not zeros


@pytest.mark.parametrize("fixture, fmt", [
    ("kaggle_dir", "gtsrb-kaggle"), ("kaggle_webp_dir", "gtsrb-kaggle"), ("official_dir", "gtsrb-official"),
    ("official_zips", "gtsrb-official"), ("pickle_dir", "gtsrb-pickle"),
])
def test_every_gtsrb_layout_loads_train_and_test(request, fixture, fmt):
    root = request.getfixturevalue(fixture)
    assert detect_format(root) == fmt
    train = load_dataset(root, subset="train", size=24, progress=False)
    test = load_dataset(root, subset="test", size=24, progress=False)
    _check_split(train)
    _check_split(test)
    assert len(train.class_names) in (4, 43)


def test_layouts_agree_pixel_for_pixel(kaggle_dir, official_dir, official_zips):
    """The same generated images, stored as PNG, PPM folders and PPM zips, give identical crops."""
    a = load_dataset(kaggle_dir, subset="test", size=24, progress=False)
    b = load_dataset(official_dir, subset="test", size=24, progress=False)
    c = load_dataset(official_zips, subset="test", size=24, progress=False)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(b.images, c.images)


def test_tracks_come_from_file_names(kaggle_dir, official_dir):
    for root in (kaggle_dir, official_dir):
        split = load_dataset(root, size=24, progress=False)
        assert split.tracks is not None
        # class 2, track 3 in both naming schemes (CCCCC_TTTTT_FFFFF and 000CC/TTTTT_FFFFF)
        assert "00002_00003" in set(split.tracks)


def test_pickle_has_its_own_val_subset_and_uses_coords(pickle_dir):
    val = load_dataset(pickle_dir, subset="val", size=24, progress=False)
    _check_split(val)
    assert FORMATS["gtsrb-pickle"].has_val(pickle_dir)


def test_cifar10_batches(cifar_dir):
    assert detect_format(cifar_dir) == "cifar10"
    train = load_dataset(cifar_dir, subset="train", size=32, progress=False)
    test = load_dataset(cifar_dir, subset="test", size=32, progress=False)
    assert len(train) == 100 and len(test) == 20 and train.class_names[0] == "airplane"
    assert train.tracks is None
    # Channel-major rows were turned into HWC: each fixture image is one grey level plus noise.
    assert np.all(np.abs(train.images[0].astype(int) - train.images[0].mean()) < 25)


def test_crop_uses_the_roi_and_shared_preprocessing(kaggle_dir):
    """The cached crop equals runtime.crop_and_resize on the decoded file with its ROI."""
    import csv

    with open(kaggle_dir / "Train.csv") as f:
        row = next(csv.DictReader(f))
    img = decode_image((kaggle_dir / row["Path"]).read_bytes())
    roi = [int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")]
    expected = crop_and_resize(img, (roi[0], roi[1], roi[2] + 1, roi[3] + 1), PreprocessSpec(size=24))
    split = load_dataset(kaggle_dir, size=24, progress=False)
    np.testing.assert_array_equal(split.images[0], expected)


def test_second_load_comes_from_cache(kaggle_dir, tmp_path):
    first = load_dataset(kaggle_dir, size=20, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    second = load_dataset(kaggle_dir, size=20, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.tracks, second.tracks)
    assert first.fingerprint == second.fingerprint
    load_dataset(kaggle_dir, size=24, cache_dir=tmp_path, progress=False)  # another size is another entry
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_track_split_holds_out_whole_tracks_stratified():
    labels = np.repeat(np.arange(5), 100)
    tracks = np.array([f"{c}_{i // 10}" for c, i in zip(labels, np.tile(np.arange(100), 5))])
    tr, va = track_split(labels, tracks, val_fraction=0.2, seed=3)
    assert not set(tracks[tr]) & set(tracks[va])
    assert len(tr) + len(va) == 500
    for c in range(5):  # 2 of each class's 10 tracks
        assert len(np.unique(tracks[va][labels[va] == c])) == 2
    _, va2 = track_split(labels, tracks, val_fraction=0.2, seed=3)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, track_split(labels, tracks, val_fraction=0.2, seed=4)[1])


def test_random_split_is_stratified():
    labels = np.repeat(np.arange(3), 50)
    tr, va = random_split(labels, 0.2, seed=0)
    assert np.bincount(labels[va]).tolist() == [10, 10, 10]
    assert not set(tr) & set(va)

