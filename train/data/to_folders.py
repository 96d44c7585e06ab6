"""Write a dataset (any layout signkit reads) as class folders: a start for your own dataset, or a few classes set apart.

    python -m train.data.to_folders --data data/GTSRB --out data/gtsrb-38 --exclude 6 22 27 30 42 --link
    python -m train.data.to_folders --data data/GTSRB --out data/new5 --classes 6 22 27 30 42 --photos-per-class 10

Each class becomes OUT/<class name>/ (a "/" in a name becomes "_"); images keep their file names, and
``boxes.csv`` keeps their sign boxes and tracks, so ``--format folders`` reads exactly what the
source held. ``--link`` symlinks the images instead of copying them (folder sources only).
``--photos-per-class N`` writes N images per class, each from another track (the middle frame),
into OUT/train, and every image of the class's other tracks into OUT/val: a few photos to add
with ``python -m train --extend``, and the rest of those signs to score them on.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.atomic import atomic_path, ensure_writable_dir
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, DatasetFormatError, cli_errors
from train.data.dataset import check_data_path, detect_format
from train.data.formats import FORMATS
from train.data.listing import Entry, Listing


def folder_name(name: str) -> str:
    return name.replace("/", "_").strip() or "unnamed"


def _source_file(listing: Listing, entry: Entry) -> Path:
    """The image file behind an entry of a folder tree (zips and arrays have none to copy or link)."""
    where = Path(listing.describe(entry))
    if not where.is_file():
        raise ConfigError(f"{where} is not a file on disk (a zip member or an array): to_folders needs a folder layout "
                          f"such as the Kaggle one; unpack the dataset first")
    return where


def write_folders(listing: Listing, out: Path, entries: Sequence[Entry], link: bool) -> int:
    """Write ``entries`` as OUT/<class>/<file> with OUT/boxes.csv; return how many."""
    out = ensure_writable_dir(out, "--out")
    rows = []
    for e in entries:
        src = _source_file(listing, e)
        rel = Path(folder_name(listing.class_names[e.label])) / src.name
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        dest = out / rel
        if dest.exists() or dest.is_symlink():
            dest.unlink()
        if link:
            os.symlink(src.resolve(), dest)
        else:
            shutil.copy2(src, dest)
        track = (e.track or "").split("_")[-1] or ""
        box = e.roi if e.roi is not None else None
        rows.append([rel.as_posix(), *(box if box else ("", "", "", "")), f"t{track}" if track else ""])
    with atomic_path(out / "boxes.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "x1", "y1", "x2", "y2", "track"])
        w.writerows(r for r in rows if r[1] != "")
    return len(rows)


def pick_photos(entries: list[Entry], per_class: int, seed: int) -> tuple[list[Entry], list[Entry]]:
    """Per class: ``per_class`` images from as many tracks (the middle frame of each), and every image of the others."""
    rng = np.random.default_rng(seed)
    photos: list[Entry] = []
    rest: list[Entry] = []
    for label in sorted({e.label for e in entries}):
        by_track: dict[str, list[Entry]] = {}
        for e in entries:
            if e.label == label:
                by_track.setdefault(e.track or f"image{id(e)}", []).append(e)
        tracks = sorted(by_track)
        if len(tracks) <= per_class:
            raise ConfigError(f"class {label} has {len(tracks)} tracks: --photos-per-class {per_class} leaves none to score on")
        chosen = set(rng.choice(len(tracks), per_class, replace=False).tolist())
        for i, t in enumerate(tracks):
            frames = by_track[t]
            if i in chosen:
                photos.append(frames[len(frames) // 2])
            else:
                rest.extend(frames)
    return photos, rest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.data.to_folders", formatter_class=HelpFormatter,
        description="Write a dataset as class folders (with boxes.csv), whole or some classes of it.",
        epilog="examples:\n  python -m train.data.to_folders --data data/GTSRB --out data/gtsrb-38 --exclude 6 22 27 30 42 --link\n"
               "  python -m train.data.to_folders --data data/GTSRB --out data/new5 --classes 6 22 27 30 42 "
               "--photos-per-class 10",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder (Kaggle or official layout, or class folders)")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", *FORMATS), help="the dataset's layout")
    p.add_argument("--subset", default="train", choices=("train", "val", "test"), help="which subset of the dataset to write")
    p.add_argument("--out", type=Path, required=True, help="folder to write the class folders into")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--classes", type=int, nargs="+", default=None, help="only these class ids")
    which.add_argument("--exclude", type=int, nargs="+", default=None, help="every class but these ids")
    p.add_argument("--photos-per-class", type=int, default=None, metavar="N",
                   help="N images per class from N tracks into OUT/train, the other tracks' images into OUT/val")
    p.add_argument("--seed", type=int, default=0, help="which tracks --photos-per-class picks")
    p.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    return p


@cli_errors("python -m train.data.to_folders")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_data_path(args.data)
    fmt = detect_format(args.data) if args.fmt == "auto" else args.fmt
    listing = FORMATS[fmt].listing(args.data, args.subset)
    n = len(listing.class_names)
    for c in args.classes or args.exclude or []:
        if not 0 <= c < n:
            raise DatasetFormatError(f"class id {c} is not one of {args.data}'s 0..{n - 1}")
    keep = set(args.classes) if args.classes else set(range(n)) - set(args.exclude or [])
    entries = [e for e in listing.entries if e.label in keep]
    if args.photos_per_class:
        photos, rest = pick_photos(entries, args.photos_per_class, args.seed)
        a = write_folders(listing, args.out / "train", photos, args.link)
        b = write_folders(listing, args.out / "val", rest, args.link)
        print(f"{a} photos ({args.photos_per_class} a class, each from another track) -> {args.out / 'train'}; "
              f"{b} images of the other tracks -> {args.out / 'val'}")
    else:
        count = write_folders(listing, args.out, entries, args.link)
        print(f"{count} images of {len(keep)} classes -> {args.out} (train with --data {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
