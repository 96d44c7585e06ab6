"""Tiny synthetic traffic-sign datasets written in every real on-disk layout."""

from __future__ import annotations

import csv
import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np

# Four easy classes: shape and colour differ, like real sign families.
CLASS_STYLES = [
    ("circle", (220, 30, 30)),     # red ring
    ("circle", (30, 60, 220)),     # blue disc
    ("triangle", (230, 40, 40)),   # red triangle
    ("diamond", (240, 200, 20)),   # yellow diamond
    ("square", (40, 170, 60)),     # green square (classes a run can be extended with)
    ("cross", (140, 50, 190)),     # purple cross
]
BASE_STYLES = 4  # the datasets of the other layouts use the first four; the rest are "new" signs


def make_sign(cls: int, side: int, rng: np.random.Generator, style: int | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """An RGB image of about ``side`` px with a sign of class ``cls``; returns (image, inclusive ROI)."""
    margin = max(5, side // 10)
    w = h = side + 2 * margin
    img: np.ndarray = cv2.GaussianBlur(rng.integers(60, 160, (h, w, 3), dtype=np.uint8), (5, 5), 2)
    shape, colour = CLASS_STYLES[style if style is not None else cls % BASE_STYLES]
    x1, y1, x2, y2 = margin, margin, margin + side - 1, margin + side - 1
    c = ((x1 + x2) // 2, (y1 + y2) // 2)
    r = side // 2
    if shape == "circle":
        cv2.circle(img, c, r, colour, -1 if cls % 2 else max(2, r // 4))
        if not cls % 2:
            cv2.circle(img, c, r - max(2, r // 4), (245, 245, 245), -1)
    elif shape == "square":
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
        cv2.rectangle(img, (x1 + r // 2, y1 + r // 2), (x2 - r // 2, y2 - r // 2), (245, 245, 245), -1)
    elif shape == "cross":
        t = max(2, r // 3)
        cv2.rectangle(img, (c[0] - t, y1), (c[0] + t, y2), colour, -1)
        cv2.rectangle(img, (x1, c[1] - t), (x2, c[1] + t), colour, -1)
    elif shape == "triangle":
        pts = np.array([[c[0], y1], [x2, y2], [x1, y2]], np.int32)
        cv2.fillPoly(img, [pts], colour)
        cv2.fillPoly(img, [((pts - c) * 0.55 + c).astype(np.int32)], (245, 245, 245))
    else:  # priority road: a yellow diamond inside a white rim
        pts = np.array([[c[0], y1], [x2, c[1]], [c[0], y2], [x1, c[1]]], np.int32)
        cv2.fillPoly(img, [pts], (245, 245, 245))
        cv2.fillPoly(img, [((pts - c) * 0.55 + c).astype(np.int32)], colour)
    light = rng.uniform(0.6, 1.2)
    img = np.clip(img.astype(np.float32) * light + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, (x1, y1, x2, y2)


def make_tracks(num_classes: int = 4, tracks_per_class: int = 5, frames: int = 6, seed: int = 0):
    """Yield (class, track, frame, image, roi): frames of one track show one sign growing, like GTSRB."""
    rng = np.random.default_rng(seed)
    for cls in range(num_classes):
        for track in range(tracks_per_class):
            base = int(rng.integers(22, 40))
            for frame in range(frames):
                img, roi = make_sign(cls, base + 2 * frame, rng)
                yield cls, track, frame, img, roi


def _write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, path


def write_kaggle(root: Path, ext: str = "png", **kw) -> Path:
    """Kaggle layout: Train.csv, Test.csv, Meta.csv, Train/<c>/CCCCC_TTTTT_FFFFF.<ext>, Test/NNNNN.<ext>."""
    root.mkdir(parents=True, exist_ok=True)
    header = ["Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId", "Path"]
    train_rows: list[list] = []
    test_rows: list[list] = []
    n_classes = kw.get("num_classes", 4)
    for cls, track, frame, img, roi in make_tracks(**kw):
        if track == 0 and frame % 2 == 0:  # every other frame of track 0 becomes a test image
            rel = f"Test/{len(test_rows):05d}.{ext}"
            test_rows.append([img.shape[1], img.shape[0], *roi, cls, rel])
        else:
            rel = f"Train/{cls}/{cls:05d}_{track:05d}_{frame:05d}.{ext}"
            train_rows.append([img.shape[1], img.shape[0], *roi, cls, rel])
        _write_image(root / rel, img)
    for name, rows in (("Train.csv", train_rows), ("Test.csv", test_rows)):
        with open(root / name, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    with open(root / "Meta.csv", "w", newline="") as f:
        csv.writer(f).writerows([["ClassId", "Path"], *[[c, f"Meta/{c}.png"] for c in range(n_classes)]])
    return root


def write_official(root: Path, zipped: bool = False, **kw) -> Path:
    """Official layout: GTSRB/Final_Training/Images/000CC/GT-000CC.csv + PPMs, Final_Test + GT-final_test.csv."""
    base = root / "GTSRB"
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
    train: dict[int, list[str]] = {}
    test: list[str] = []
    for cls, track, frame, img, roi in make_tracks(**kw):
        if track == 0 and frame % 2 == 0:
            name = f"{len(test):05d}.ppm"
            _write_image(base / "Final_Test/Images" / name, img)
            test.append(f"{name};{img.shape[1]};{img.shape[0]};{';'.join(map(str, roi))};{cls}")
        else:
            name = f"{track:05d}_{frame:05d}.ppm"
            _write_image(base / f"Final_Training/Images/{cls:05d}" / name, img)
            train.setdefault(cls, []).append(f"{name};{img.shape[1]};{img.shape[0]};{';'.join(map(str, roi))};{cls}")
    for cls, rows in train.items():
        (base / f"Final_Training/Images/{cls:05d}/GT-{cls:05d}.csv").write_text("\n".join([header, *rows]) + "\n")
    (base / "Final_Test/Images/GT-final_test.test.csv").write_text(
        "\n".join([header.rsplit(";", 1)[0], *[r.rsplit(";", 1)[0] for r in test]]) + "\n")
    gt = root / "GT-final_test.csv"
    gt.write_text("\n".join([header, *test]) + "\n")
    if not zipped:
        return root
    # The official archives: training and test images zipped under GTSRB/, the test GT separately.
    for zname, prefix in (("GTSRB_Final_Training_Images.zip", "GTSRB/Final_Training"), ("GTSRB_Final_Test_Images.zip", "GTSRB/Final_Test")):
        with zipfile.ZipFile(root / zname, "w") as z:
            for p in sorted((root / prefix).rglob("*")):
                if p.is_file():
                    z.write(p, p.relative_to(root).as_posix())
    with zipfile.ZipFile(root / "GTSRB_Final_Test_GT.zip", "w") as z:
        z.write(gt, "GT-final_test.csv")
    import shutil

    shutil.rmtree(base)
    gt.unlink()
    return root


def write_pickle(root: Path, **kw) -> Path:
    """Pickled 32x32 layout: train.p / valid.p / test.p dicts with features, labels, sizes, coords."""
    root.mkdir(parents=True, exist_ok=True)
    parts: dict[str, dict[str, list]] = {s: {"features": [], "labels": [], "sizes": [], "coords": []} for s in ("train", "valid", "test")}
    for cls, track, _frame, img, roi in make_tracks(**kw):
        part = "test" if track == 0 else "valid" if track == 1 else "train"
        d = parts[part]
        d["features"].append(cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA))
        d["labels"].append(cls)
        d["sizes"].append((img.shape[1], img.shape[0]))
        d["coords"].append(roi)
    for part, d in parts.items():
        with open(root / f"{part}.p", "wb") as f:
            pickle.dump({k: np.asarray(v) for k, v in d.items()}, f)
    return root


def write_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 python batches (bytes keys, N x 3072 channel-major rows)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        images = np.stack([np.full((32, 32, 3), 20 * lab, np.uint8) + rng.integers(0, 20, (32, 32, 3), dtype=np.uint8) for lab in labels])
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": images.transpose(0, 3, 1, 2).reshape(per_batch, -1), b"labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]}, f)
    return root


def write_gtsdb(root: Path, frames: int = 3, seed: int = 0, size: tuple[int, int] = (480, 320)) -> Path:
    """GTSDB layout: JPEG frames with synthetic signs pasted on a plain road scene, and gt.txt."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    w, h = size
    for f in range(frames):
        frame = np.full((h, w, 3), 110, np.uint8)
        frame[h // 2:] = 70  # "road"
        for k, cls in enumerate(range(BASE_STYLES)):
            img, (x1, y1, x2, y2) = make_sign(cls, int(rng.integers(28, 44)), rng)
            ox, oy = 20 + k * (w // 4), int(rng.integers(20, h // 2 - img.shape[0]))
            frame[oy:oy + img.shape[0], ox:ox + img.shape[1]] = img
            lines.append(f"{f:05d}.ppm;{ox + x1};{oy + y1};{ox + x2};{oy + y2};{cls}")
        _write_image(root / f"{f:05d}.jpg", frame)
    (root / "gt.txt").write_text("\n".join(lines) + "\n")
    return root


def write_folders(root: Path, classes: dict[str, int], tracks: int = 3, frames: int = 4, seed: int = 0,
                  ext: str = "png", splits: tuple[str, ...] = ()) -> Path:
    """Class-folder layout: ROOT/<name>/<track>_<frame>.<ext> (or ROOT/<split>/<name>/...), each class drawn in the
    CLASS_STYLES entry ``classes[name]``."""
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for name, style in classes.items():
            for t in range(tracks):
                base = int(rng.integers(22, 40))
                for f in range(frames):
                    img, _ = make_sign(style, base + 2 * f, rng, style=style)
                    _write_image(root / split / name / f"{split or 'p'}{t:03d}_{f:03d}.{ext}", img)
    return root
