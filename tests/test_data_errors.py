"""Bad datasets give one clear error naming the file and the fix, never a traceback."""

from __future__ import annotations

import shutil

import pytest

from runtime.errors import DatasetFormatError
from train.data import load_dataset


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist.*train.download"):
        load_dataset(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetFormatError, match="is empty"):
        load_dataset(tmp_path)


def test_unknown_layout_lists_known_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(tmp_path)
    for name in ("gtsrb-kaggle", "gtsrb-official", "gtsrb-pickle", "cifar10"):
        assert name in str(err.value)


def test_csv_missing_columns(kaggle_dir, tmp_path):
    root = _copy(kaggle_dir, tmp_path / "k")
    text = (root / "Train.csv").read_text().replace("ClassId", "Label")
    (root / "Train.csv").write_text(text)
    with pytest.raises(DatasetFormatError, match=r"Train.csv lacks column\(s\) ClassId"):
        load_dataset(root, use_cache=False, progress=False)


def test_class_id_out_of_range(kaggle_dir, tmp_path):
    root = _copy(kaggle_dir, tmp_path / "k")
    lines = (root / "Train.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[6] = "57"
    lines[3] = ",".join(cells)
    (root / "Train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"Train.csv line 4: class id 57 is outside 0..3"):
        load_dataset(root, use_cache=False, progress=False)


def test_a_few_bad_images_are_skipped_with_a_count(kaggle_dir, tmp_path, capsys):
    root = _copy(kaggle_dir, tmp_path / "k")
    good = load_dataset(root, use_cache=False, progress=False, size=16)
    victim = min((root / "Train/1").glob("*.png"))
    victim.write_bytes(victim.read_bytes()[:40])  # truncated
    split = load_dataset(root, use_cache=False, progress=False, size=16, max_bad_fraction=0.05)
    assert len(split) == len(good) - 1 and split.skipped == 1
    assert victim.name in capsys.readouterr().err


def test_too_many_bad_images_fail_naming_the_first(kaggle_dir, tmp_path):
    root = _copy(kaggle_dir, tmp_path / "k")
    for p in sorted((root / "Train/2").glob("*.png"))[:3]:
        p.write_bytes(b"not an image")
    with pytest.raises(DatasetFormatError, match=r"3 of \d+ images are unreadable.*first: .*Train/2/"):
        load_dataset(root, use_cache=False, progress=False)


def test_missing_image_file_counts_as_bad(official_dir, tmp_path):
    root = _copy(official_dir, tmp_path / "o")
    for p in list((root / "GTSRB/Final_Training/Images/00001").glob("*.ppm"))[:4]:
        p.unlink()
    with pytest.raises(DatasetFormatError, match="unreadable"):
        load_dataset(root, use_cache=False, progress=False)


def test_official_test_without_labels_says_where_to_get_them(official_dir, tmp_path):
    root = _copy(official_dir, tmp_path / "o")
    (root / "GT-final_test.csv").unlink()
    with pytest.raises(DatasetFormatError, match="GTSRB_Final_Test_GT.zip"):
        load_dataset(root, subset="test", use_cache=False, progress=False)


def test_corrupt_pickle(tmp_path):
    (tmp_path / "train.p").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetFormatError, match="train.p is not a readable pickle"):
        load_dataset(tmp_path, use_cache=False, progress=False)
