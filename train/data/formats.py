"""Dataset layouts on disk, each listed into the same entries before decoding.

Known layouts (``FORMATS``):
    gtsrb-kaggle    Train.csv / Test.csv with Path, ClassId and Roi.* columns (any image type OpenCV reads)
    gtsrb-official  Final_Training/Images/000CC/GT-000CC.csv + PPMs, Final_Test/Images + GT-final_test.csv,
                    as folders or the official zips (read without extracting)
    gtsrb-pickle    train.p / valid.p / test.p dicts with 'features' (N,32,32,3 RGB) and 'labels'
    cifar10         CIFAR-10 python batches: data_batch_1..5, test_batch, batches.meta
    folders         DIR/<class name>/*.jpg|png|... with optional DIR/train, val, test and boxes.csv (train.data.folders)
"""

from __future__ import annotations

import csv
import io
import pickle
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import DatasetFormatError
from runtime.annotations import GTSRB_CLASS_NAMES
from train.data.classes import CIFAR10_CLASS_NAMES
from train.data.folders import detect_folders, list_folders
from train.data.folders import has_val as folders_has_val
from train.data.listing import Entry, Listing, check_label, csv_rows, decode_image, parse_int, read_tree_image
from train.data.tree import FileTree, ZipTree, digest

Box = tuple[int, int, int, int]
ROI_COLUMNS = ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")


def _roi(row: dict[str, str], where: str) -> Box:
    x1, y1, x2, y2 = (parse_int(row, c, where) for c in ROI_COLUMNS)
    return x1, y1, x2 + 1, y2 + 1  # GTSRB ROIs are inclusive


# --- Kaggle layout -------------------------------------------------------------------------

def _kaggle_root(path: Path) -> Path:
    return path.parent if path.is_file() else path


def detect_kaggle(path: Path) -> bool:
    root = _kaggle_root(path)
    return (root / "Train.csv").is_file() or (root / "Test.csv").is_file()


def list_kaggle(path: Path, subset: str) -> Listing:
    root = _kaggle_root(path)
    csv_path = root / {"train": "Train.csv", "test": "Test.csv"}.get(subset, "")
    if subset not in ("train", "test") or not csv_path.is_file():
        raise DatasetFormatError(f"{root} has no {subset} subset (gtsrb-kaggle offers Train.csv and Test.csv)")
    rows = csv_rows(csv_path.read_text(encoding="utf-8-sig"), ",", ("Path", "ClassId"), str(csv_path))
    roi_cols = [c for c in ROI_COLUMNS if rows and c in rows[0]]
    if roi_cols and len(roi_cols) < len(ROI_COLUMNS):
        missing = ", ".join(c for c in ROI_COLUMNS if c not in roi_cols)
        raise DatasetFormatError(f"{csv_path} has some ROI columns but lacks {missing}; add it, or remove every Roi.* "
                                 f"column to train on whole images")
    has_roi = bool(roi_cols)
    if rows and not has_roi:
        print(f"note: {csv_path} has no Roi.* columns; training on whole images (no crop to the sign)", file=sys.stderr)
    names = _kaggle_class_names(root)
    entries = []
    for i, row in enumerate(rows, start=2):
        where = f"{csv_path} line {i}"
        rel = row["Path"].strip()
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise DatasetFormatError(f"{where}: Path {rel!r} leaves the dataset folder {root}; paths must be relative "
                                     f"to it, without '..'")
        m = re.match(r"(\d+)_(\d+)_\d+$", Path(rel).stem)
        entries.append(Entry(
            ref=rel,
            label=check_label(parse_int(row, "ClassId", where), len(names), where),
            track=f"{int(m.group(1)):05d}_{m.group(2)}" if m else None,
            roi=_roi(row, where) if has_roi else None,
        ))
    tree = FileTree(root)
    has_tracks = bool(entries) and all(e.track for e in entries)
    # Every image's size and mtime are in the key: a repaired or replaced image is decoded again.
    stamps = [str(root.resolve()), subset, tree.stamp(csv_path.name), str(len(entries)), *(tree.stamp(str(e.ref)) for e in entries)]
    return Listing("gtsrb-kaggle", subset, entries, names, read_tree_image(tree), lambda e: tree.describe(str(e.ref)),
                   digest(stamps), has_tracks)


def _kaggle_class_names(root: Path) -> tuple[str, ...]:
    meta = root / "Meta.csv"
    if meta.is_file():
        rows = csv_rows(meta.read_text(encoding="utf-8-sig"), ",", ("ClassId",), str(meta))
        n = max(parse_int(r, "ClassId", str(meta)) for r in rows) + 1 if rows else 0
        if n != len(GTSRB_CLASS_NAMES):
            return tuple(f"class {i}" for i in range(n))
    return GTSRB_CLASS_NAMES


# --- Official GTSRB layout (folders or zips) -------------------------------------------------

_TRAIN_CSV = re.compile(r"(?:^|/)Final_Training/Images/(\d{5})/GT-\d{5}\.csv$")
_TEST_IMAGES = re.compile(r"(?:^|/)Final_Test/Images/")
_TEST_GT = re.compile(r"(?:^|/)GT-final_test\.csv$")


def _official_trees(path: Path) -> list[FileTree]:
    if path.is_file() and path.suffix == ".zip":
        return [ZipTree(path)]
    if not path.is_dir():
        return []
    trees: list[FileTree] = [ZipTree(z) for z in sorted(path.glob("GTSRB*.zip"))]
    if any(path.rglob("Final_Training")) or any(path.rglob("Final_Test")):
        trees.append(FileTree(path))
    return trees


def detect_official(path: Path) -> bool:
    return any(_TRAIN_CSV.search(n) or _TEST_IMAGES.search(n) for t in _official_trees(path) for n in t.names())


def list_official(path: Path, subset: str) -> Listing:
    trees = _official_trees(path)
    entries: list[Entry] = []
    refs: list[tuple[FileTree, str]] = []
    stamps = [str(path.resolve()), subset]
    if subset == "train":
        for tree in trees:
            for name in tree.names():
                m = _TRAIN_CSV.search(name)
                if not m:
                    continue
                stamps.append(tree.stamp(name))
                folder = name.rsplit("/", 1)[0]
                where = tree.describe(name)
                rows = csv_rows(tree.read(name).decode("utf-8-sig"), ";", ("Filename", "ClassId", *ROI_COLUMNS), where)
                for i, row in enumerate(rows, start=2):
                    label = check_label(parse_int(row, "ClassId", f"{where} line {i}"), len(GTSRB_CLASS_NAMES), f"{where} line {i}")
                    fname = row["Filename"].strip()
                    refs.append((tree, f"{folder}/{fname}"))
                    stamps.append(tree.stamp(f"{folder}/{fname}"))
                    entries.append(Entry(len(refs) - 1, label, f"{label:05d}_{fname.split('_')[0]}", _roi(row, f"{where} line {i}")))
    elif subset == "test":
        images = {n.rsplit("/", 1)[1]: (t, n) for t in trees for n in t.names() if _TEST_IMAGES.search(n) and not n.endswith(".csv")}
        gts = [(t, n) for t in trees for n in t.names() if _TEST_GT.search(n)]
        if not gts:
            raise DatasetFormatError(f"{path}: test labels (GT-final_test.csv) not found; put GTSRB_Final_Test_GT.zip beside the test images")
        tree, name = gts[0]
        where = tree.describe(name)
        stamps.append(tree.stamp(name))
        rows = csv_rows(tree.read(name).decode("utf-8-sig"), ";", ("Filename", "ClassId", *ROI_COLUMNS), where)
        for i, row in enumerate(rows, start=2):
            fname = row["Filename"].strip()
            if fname not in images:
                raise DatasetFormatError(f"{where} line {i}: image {fname} not found under Final_Test/Images")
            refs.append(images[fname])
            stamps.append(images[fname][0].stamp(images[fname][1]))
            label = check_label(parse_int(row, "ClassId", f"{where} line {i}"), len(GTSRB_CLASS_NAMES), f"{where} line {i}")
            entries.append(Entry(len(refs) - 1, label, None, _roi(row, f"{where} line {i}")))
    else:
        raise DatasetFormatError(f"{path} has no {subset} subset (gtsrb-official offers train and test)")
    if not entries:
        raise DatasetFormatError(f"{path}: no GTSRB {subset} annotations (GT-*.csv) found")

    def read(entry: Entry) -> np.ndarray | None:
        tree, name = refs[int(entry.ref)]
        try:
            return decode_image(tree.read(name))
        except (OSError, KeyError):
            return None

    def describe(entry: Entry) -> str:
        tree, name = refs[int(entry.ref)]
        return tree.describe(name)

    return Listing("gtsrb-official", subset, entries, GTSRB_CLASS_NAMES, read, describe, digest(stamps), subset == "train")


# --- In-memory array layouts (pickled 32x32, CIFAR-10) ----------------------------------------

def _array_listing(fmt: str, subset: str, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
                   where: str, stamp: str, rois: Sequence[Box | None] | None = None) -> Listing:
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise DatasetFormatError(f"{where}: expected features N,H,W,3 matching labels, got {images.shape} and {labels.shape}")
    entries = [Entry(i, check_label(int(lab), len(names), f"{where} item {i}"), None, rois[i] if rois else None)
               for i, lab in enumerate(labels)]
    images = np.ascontiguousarray(images, dtype=np.uint8)
    return Listing(fmt, subset, entries, names, lambda e: images[int(e.ref)], lambda e: f"{where}[{e.ref}]", stamp)


def _unpickle(path: Path, encoding: str = "ASCII") -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding=encoding)
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DatasetFormatError(f"{path} is not a readable pickle ({err}); re-download it") from None


PICKLE_FILES = {"train": "train.p", "val": "valid.p", "test": "test.p"}


def detect_pickle(path: Path) -> bool:
    return (path.is_file() and path.suffix == ".p") or any((path / f).is_file() for f in PICKLE_FILES.values())


def list_pickle(path: Path, subset: str) -> Listing:
    file = path if path.is_file() else path / PICKLE_FILES.get(subset, "")
    if subset not in PICKLE_FILES or not file.is_file():
        raise DatasetFormatError(f"{path} has no {subset} subset (gtsrb-pickle offers train.p, valid.p, test.p)")
    data = _unpickle(file)
    if not isinstance(data, dict) or "features" not in data or "labels" not in data:
        raise DatasetFormatError(f"{file} is not a dict with 'features' and 'labels'")
    feats, labels = np.asarray(data["features"]), np.asarray(data["labels"])
    rois = None
    if "coords" in data and "sizes" in data:
        # coords are in the original image's pixels; features were resized to 32x32.
        sizes = np.asarray(data["sizes"], dtype=np.float64)
        coords = np.asarray(data["coords"], dtype=np.float64)
        sx, sy = feats.shape[2] / sizes[:, 0], feats.shape[1] / sizes[:, 1]
        rois = [(int(c[0] * a), int(c[1] * b), int(np.ceil((c[2] + 1) * a)), int(np.ceil((c[3] + 1) * b)))
                for c, a, b in zip(coords, sx, sy)]
    names = _signnames(file.parent) or (GTSRB_CLASS_NAMES if labels.size and labels.max() < 43 else
                                        tuple(f"class {i}" for i in range(int(labels.max()) + 1)))
    return _array_listing("gtsrb-pickle", subset, feats, labels, names, str(file), digest([str(file.resolve()), FileTree(file.parent).stamp(file.name)]), rois)


def _signnames(folder: Path) -> tuple[str, ...] | None:
    f = folder / "signnames.csv"
    if not f.is_file():
        return None
    rows = csv_rows(f.read_text(encoding="utf-8-sig"), ",", ("ClassId", "SignName"), str(f))
    return tuple(r["SignName"] for r in sorted(rows, key=lambda r: parse_int(r, "ClassId", str(f))))


def _cifar_root(path: Path) -> Path:
    return path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path


def detect_cifar(path: Path) -> bool:
    root = _cifar_root(path)
    return (root / "data_batch_1").is_file() or (root / "test_batch").is_file()


def list_cifar(path: Path, subset: str) -> Listing:
    root = _cifar_root(path)
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}.get(subset)
    if files is None:
        raise DatasetFormatError(f"{root} has no {subset} subset (cifar10 offers train and test)")
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DatasetFormatError(f"{root} lacks {', '.join(missing)}; run `python -m train.download cifar10`")
    images, labels = [], []
    for f in files:
        d = _unpickle(root / f, encoding="bytes")
        images.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(d[b"labels"])
    names = CIFAR10_CLASS_NAMES
    if (root / "batches.meta").is_file():
        names = tuple(n.decode() for n in _unpickle(root / "batches.meta", encoding="bytes")[b"label_names"])
    stamp = digest([str(root.resolve()), *(FileTree(root).stamp(f) for f in files)])
    return _array_listing("cifar10", subset, np.concatenate(images), np.asarray(labels), names, str(root), stamp)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[Path], bool]
    listing: Callable[[Path, str], Listing]
    has_val: Callable[[Path], bool] = lambda path: False  # a published validation subset (held out by track)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("gtsrb-kaggle", "Train.csv/Test.csv with Path, ClassId, Roi.* (Kaggle GTSRB)", detect_kaggle, list_kaggle),
    Format("gtsrb-official", "Final_Training/Images/000CC/GT-000CC.csv + PPM, folders or official zips", detect_official, list_official),
    Format("gtsrb-pickle", "train.p/valid.p/test.p dicts with features/labels (32x32)", detect_pickle, list_pickle,
           lambda p: p.is_dir() and (p / PICKLE_FILES["val"]).is_file()),
    Format("cifar10", "CIFAR-10 python batches (data_batch_1..5, test_batch)", detect_cifar, list_cifar),
    Format("folders", "DIR/<class name>/*.jpg|png|... (optional DIR/train, val, test; boxes.csv)", detect_folders,
           list_folders, folders_has_val),
)}
