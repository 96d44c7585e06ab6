"""Decode a listing once into the in-memory ``Split`` and cache the resized arrays."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime.atomic import atomic_path
from runtime.errors import DatasetFormatError
from runtime.preprocess import PREPROCESS_VERSION, PreprocessSpec, crop_and_resize
from train.data.formats import FORMATS, Entry, Listing
from train.data.tree import digest


@dataclass(frozen=True)
class Split:
    """Every source ends up as this: RGB crops at one size, labels, physical tracks if known."""

    images: np.ndarray  # uint8 (N, S, S, 3), RGB, cropped (ROI + margin) and resized
    labels: np.ndarray  # int64 (N,)
    tracks: np.ndarray | None  # str (N,), the physical sign each frame shows; None if unknown
    class_names: tuple[str, ...]
    fingerprint: str  # source + subset + size + preprocessing version
    source: str = ""
    skipped: int = 0
    files: np.ndarray | None = None  # str (N,): where each image came from (for error lists and galleries)
    sizes: np.ndarray | None = None  # int (N, 2): the original image's width and height
    rois: np.ndarray | None = None  # int (N, 4): the sign's box in the original image (x2/y2 exclusive), -1 if none

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, idx: np.ndarray) -> Split:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Split(self.images[idx], self.labels[idx], pick(self.tracks), self.class_names, self.fingerprint, self.source,
                     self.skipped, pick(self.files), pick(self.sizes), pick(self.rois))


CACHE_LAYOUT = 2  # what a cache file holds (2: file names, image sizes and ROIs too); not part of the data's fingerprint


def default_cache_dir() -> Path:
    return Path(os.environ.get("SIGNKIT_CACHE", Path.home() / ".cache" / "signkit"))


def detect_format(path: Path) -> str:
    for name, fmt in FORMATS.items():
        if fmt.detect(path):
            return name
    known = "; ".join(f"{n}: {f.description}" for n, f in FORMATS.items())
    raise DatasetFormatError(f"cannot tell the layout of {path}. Known formats - {known}. Pass --format to choose one")


def check_data_path(path: Path) -> None:
    if not path.exists():
        raise DatasetFormatError(f"{path} does not exist; pass --data a dataset folder, or fetch one with `python -m train.download gtsrb`")
    if path.is_dir() and not any(path.iterdir()):
        raise DatasetFormatError(f"{path} is empty; put a dataset there or run `python -m train.download gtsrb --to {path}`")


def load_dataset(path: str | Path, fmt: str = "auto", *, subset: str = "train", size: int = 32, margin: float = 0.1,
                 cache_dir: Path | None = None, use_cache: bool = True, max_bad_fraction: float = 0.01,
                 workers: int = 2, progress: bool = True) -> Split:
    """Load one subset of a dataset in any known layout as a ``Split``.

    Args:
        path: dataset folder, CSV, zip or pickle.
        fmt: a name from ``FORMATS`` or "auto" to detect it.
        subset: "train", "test", or "val" where the layout has one.
        size, margin: crop geometry (see ``runtime.preprocess.PreprocessSpec``).
        max_bad_fraction: unreadable images are skipped with a count; more than this fraction fails.

    Raises:
        DatasetFormatError: missing/empty path, unknown layout, bad CSV, bad labels, too many bad images.
    """
    path = Path(path).expanduser()
    check_data_path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise DatasetFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    listing = FORMATS[fmt].listing(path, subset)
    if not listing.entries:
        raise DatasetFormatError(f"{path}: the {subset} subset lists no images")
    key = digest([listing.fingerprint, str(size), f"{margin:g}", str(PREPROCESS_VERSION)])
    cache_file = (cache_dir or default_cache_dir()) / f"{fmt}-{subset}-{size}px-{key}-v{CACHE_LAYOUT}.npz"
    if use_cache and cache_file.is_file():
        return _read_cache(cache_file, key, str(path))
    split = _decode(listing, PreprocessSpec(size=size, margin=margin), key, str(path), max_bad_fraction, workers, progress)
    if use_cache:
        _write_cache(cache_file, split)
    return split


def _decode(listing: Listing, spec: PreprocessSpec, key: str, source: str, max_bad: float, workers: int, progress: bool) -> Split:
    def one(entry: Entry) -> tuple[np.ndarray, tuple[int, int]] | None:
        img = listing.read(entry)
        if img is None:
            return None
        try:
            return crop_and_resize(img, entry.roi, spec), (img.shape[1], img.shape[0])
        except ValueError:
            return None

    n = len(listing.entries)
    out = np.zeros((n, spec.size, spec.size, 3), np.uint8)
    sizes = np.zeros((n, 2), np.int32)
    ok = np.zeros(n, bool)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        it = pool.map(one, listing.entries, chunksize=64)
        bar = tqdm(it, total=n, desc=f"decoding {listing.fmt}/{listing.subset}", unit="img",
                   disable=not progress, file=sys.stderr, mininterval=0.5)
        for i, done in enumerate(bar):
            if done is not None:
                out[i], sizes[i], ok[i] = done[0], done[1], True
    bad = np.flatnonzero(~ok)
    if len(bad):
        first = listing.describe(listing.entries[bad[0]])
        if len(bad) > max_bad * n:
            raise DatasetFormatError(f"{len(bad)} of {n} images are unreadable or truncated (first: {first}); "
                                     f"repair or re-download the dataset")
        print(f"warning: skipped {len(bad)} unreadable image(s) of {n} (first: {first})", file=sys.stderr)
    labels = np.array([e.label for e in listing.entries], np.int64)
    tracks = np.array([e.track for e in listing.entries]) if listing.has_tracks else None
    files = np.array([listing.describe(e) for e in listing.entries])
    rois = np.array([e.roi if e.roi is not None else (-1, -1, -1, -1) for e in listing.entries], np.int32).reshape(-1, 4)
    return Split(out[ok], labels[ok], None if tracks is None else tracks[ok], listing.class_names, key, source, len(bad),
                 files[ok], sizes[ok], rois[ok])


def _write_cache(file: Path, split: Split) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"class_names": split.class_names, "fingerprint": split.fingerprint, "skipped": split.skipped})
    empty = np.array([], dtype="U1")
    with atomic_path(file) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=split.images, labels=split.labels, tracks=split.tracks if split.tracks is not None else empty,
                 files=split.files if split.files is not None else empty,
                 sizes=split.sizes if split.sizes is not None else np.zeros((0, 2), np.int32),
                 rois=split.rois if split.rois is not None else np.zeros((0, 4), np.int32), meta=np.array(meta))


def _read_cache(file: Path, key: str, source: str) -> Split:
    with np.load(file) as z:
        meta = json.loads(str(z["meta"]))

        def optional(name: str) -> np.ndarray | None:
            a = z[name] if name in z else None
            return a if a is not None and len(a) else None

        return Split(z["images"], z["labels"], optional("tracks"), tuple(meta["class_names"]), key, source,
                     meta.get("skipped", 0), optional("files"), optional("sizes"), optional("rois"))
