"""Class-per-folder datasets: ``DIR/<class name>/*.jpg|png|webp|...`` (what image_dataset_from_directory and
torchvision's ImageFolder read), optionally split into ``DIR/train``, ``DIR/val``, ``DIR/test``.

* Class names are the folder names, sorted; a val/test folder may hold only classes train has.
  Images are found at any depth under a class folder; any image type OpenCV reads, any case.
* Whole images, unless ``boxes.csv`` in the split's folder gives the sign's box:
  ``file,x1,y1,x2,y2[,track]`` with ``file`` relative to that folder and ``x2``/``y2`` exclusive.
* Tracks (photos of one physical sign, kept on one side of a validation split): the CSV's ``track``
  column, else a ``<track>_<frame>`` file-name prefix (``sign7_003.jpg``); without them, a random
  split with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

from runtime.annotations import IMAGE_SUFFIXES
from runtime.errors import DatasetFormatError
from train.data.listing import Box, Entry, Listing, csv_rows, parse_int, read_tree_image
from train.data.tree import FileTree, digest

SUBSETS = ("train", "val", "test")
_TRACK = re.compile(r"^(.+)_(\d+)$")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _split_root(path: Path, subset: str) -> Path | None:
    if (path / "train").is_dir():
        return path / subset if (path / subset).is_dir() else None
    return path if subset == "train" else None


def detect_folders(path: Path) -> bool:
    """A folder (or its train/ folder) whose sub-folders hold images."""
    root = _split_root(path, "train") if path.is_dir() else None
    return root is not None and any(_images(d) for d in _class_dirs(root)[:50])


def has_val(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir() and (path / "val").is_dir()


def _boxes(root: Path) -> dict[str, tuple[Box | None, str | None]]:
    f = root / "boxes.csv"
    if not f.is_file():
        return {}
    out: dict[str, tuple[Box | None, str | None]] = {}
    for i, row in enumerate(csv_rows(f.read_text(encoding="utf-8-sig"), ",", ("file", "x1", "y1", "x2", "y2"), str(f)), start=2):
        where = f"{f} line {i}"
        x1, y1, x2, y2 = (parse_int(row, c, where) for c in ("x1", "y1", "x2", "y2"))
        if x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
            raise DatasetFormatError(f"{where}: box {x1},{y1},{x2},{y2} has no area or is negative (x2, y2 are exclusive)")
        out[Path(row["file"].strip()).as_posix()] = ((x1, y1, x2, y2), (row.get("track") or "").strip() or None)
    return out


def train_class_names(path: Path) -> tuple[str, ...]:
    root = _split_root(path, "train")
    if root is None:
        raise DatasetFormatError(f"{path} holds no class folders")
    return tuple(d.name for d in _class_dirs(root))


def list_folders(path: Path, subset: str) -> Listing:
    root = _split_root(path, subset)
    if root is None:
        raise DatasetFormatError(f"{path} has no {subset} subset (class folders offer train, and val/test as "
                                 f"DIR/val, DIR/test beside DIR/train)")
    names = train_class_names(path)
    boxes = _boxes(root)
    entries: list[Entry] = []
    stamps = [str(root.resolve()), subset]
    tree = FileTree(root)
    for d in _class_dirs(root):
        if d.name not in names:
            raise DatasetFormatError(f"{d}: class {d.name!r} is not a class of {path / 'train'}; add it there or remove it")
        files = _images(d)
        if not files:
            raise DatasetFormatError(f"class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)}); add some or remove it")
        label = names.index(d.name)
        for f in files:
            rel = f.relative_to(root).as_posix()
            box, track = boxes.get(rel, (None, None))
            if track is None:
                m = _TRACK.match(f.stem)
                track = m.group(1) if m else None
            entries.append(Entry(rel, label, f"{d.name}/{track}" if track else None, box))
            stamps.append(tree.stamp(rel))
    missing = sorted(set(boxes) - {str(e.ref) for e in entries})
    if missing:
        raise DatasetFormatError(f"{root / 'boxes.csv'} names {missing[0]}, which is not an image of a class folder")
    has_tracks = bool(entries) and all(e.track for e in entries)
    return Listing("folders", subset, entries, names, read_tree_image(tree), lambda e: tree.describe(str(e.ref)),
                   digest(stamps), has_tracks)
