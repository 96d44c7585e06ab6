"""A folder of "not a sign" crops (from ``python -m train.frames.negatives``) as one extra class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.annotations import IMAGE_SUFFIXES
from runtime.errors import DatasetFormatError
from runtime.preprocess import PreprocessSpec, crop_and_resize
from train.data.dataset import Split
from train.data.formats import decode_image
from train.data.tree import digest

BACKGROUND_NAME = "not a sign"


def load_background(folder: Path, size: int) -> tuple[Split, dict]:
    """Crops resized like any training image; the track of a crop is the frame it came from."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if Path(folder).is_dir() else []
    if not files:
        raise DatasetFormatError(f"--background {folder} holds no crops; make some with `python -m train.frames.negatives`")
    manifest_file = Path(folder) / "negatives.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {"frames": []}
    spec = PreprocessSpec(size=size)
    images, tracks, sizes = [], [], []
    for f in files:
        img = decode_image(f.read_bytes())
        if img is None:
            raise DatasetFormatError(f"{f} is not a readable image; delete it or mine the negatives again")
        images.append(crop_and_resize(img, None, spec))
        tracks.append("bg_" + f.stem.rsplit("_", 1)[0])
        sizes.append((img.shape[1], img.shape[0]))
    split = Split(np.stack(images), np.zeros(len(files), np.int64), np.array(tracks), (BACKGROUND_NAME,),
                  digest([str(Path(folder).resolve()), str(len(files)), files[-1].name]), str(folder), 0,
                  np.array([str(f) for f in files]), np.array(sizes, np.int32), np.full((len(files), 4), -1, np.int32))
    return split, manifest
