"""What every on-disk layout lists before decoding: entries, and how to read and name them."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from runtime.errors import DatasetFormatError
from train.data.tree import FileTree

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Entry:
    """One labelled image before decoding: a file in a tree, or a row of an in-memory array."""

    ref: str | int
    label: int
    track: str | None = None
    roi: Box | None = None  # x2/y2 exclusive, in the image's own pixels


@dataclass
class Listing:
    """What a layout yields for one subset; ``read`` returns RGB uint8 or None if undecodable."""

    fmt: str
    subset: str
    entries: list[Entry]
    class_names: tuple[str, ...]
    read: Callable[[Entry], np.ndarray | None]
    describe: Callable[[Entry], str]
    fingerprint: str
    has_tracks: bool = field(default=False)


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode any image OpenCV reads into RGB uint8, or None if it is unreadable, truncated or empty."""
    if not data:
        return None  # a 0-byte file: cv2.imdecode would raise on the empty buffer
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if img is None or img.size == 0:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_tree_image(tree: FileTree) -> Callable[[Entry], np.ndarray | None]:
    def read(entry: Entry) -> np.ndarray | None:
        try:
            return decode_image(tree.read(str(entry.ref)))
        except (OSError, KeyError):
            return None

    return read


def check_label(label: int, n_classes: int, where: str) -> int:
    if not 0 <= label < n_classes:
        raise DatasetFormatError(f"{where}: class id {label} is outside 0..{n_classes - 1}; fix the label or the class list")
    return label


def csv_rows(text: str, delimiter: str, required: tuple[str, ...], where: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetFormatError(f"{where} lacks column(s) {', '.join(missing)}; expected header with {', '.join(required)}")
    reader.fieldnames = header
    return list(reader)


def parse_int(row: dict[str, str], col: str, where: str) -> int:
    try:
        return int(str(row[col]).strip())
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{where}: column {col} holds {row.get(col)!r}, not an integer") from None


