"""How a run's data is divided: the held-out images chosen once, at training, and read back from the run.

Training chooses which images validate (whole physical tracks, 10 % of each class's by default) and
which are dev-test (held out from validation too, only to report on), writes the choice to
``RUN/split.json`` as indices into each source, and assembles the sets from it. Everything after
training (export's calibration and gate, evaluation, parity, the report) rebuilds the same sets from
that record with :func:`assemble`: nothing re-derives the choice, so a changed rule cannot silently
move a validation image into training.

A run's sets can have three sources: the sign dataset, a folder of "not a sign" crops (one more class,
``--background``) and class folders of added photos (``--extend RUN --add DIR``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import write_text_atomic
from runtime.errors import ConfigError, DatasetFormatError
from train.data import Split, detect_format, load_dataset, random_split, track_split
from train.data.background import BACKGROUND_NAME, load_background
from train.data.formats import FORMATS

SPLIT_FORMAT = "signkit-split/1"


class OtherDataError(ConfigError):
    """A dataset with other images than the run recorded: its indices do not apply."""

SPLIT_FILE = "split.json"
DEVTEST_SALT = 1_000_003  # the dev-test tracks are drawn with another stream than the validation tracks


@dataclass(frozen=True)
class SplitRule:
    """What decides the held-out images (the training flags of the same names)."""

    val_fraction: float = 0.1
    devtest_fraction: float = 0.0
    seed: int = 0  # the held-out tracks (--split-seed, else --seed)
    bg_seed: int = 0  # the background crops' held-out frames (--seed)
    add_holdout: float = 0.3


@dataclass(frozen=True)
class Source:
    """One source of a run's images, the indices it holds out, and enough to know it again."""

    path: str
    fingerprint: str
    images: int
    val: tuple[int, ...] | None  # None: the source's own validation subset is the validation set
    devtest: tuple[int, ...] = ()
    fmt: str = "auto"
    kind: str = "track"  # "track" | "random" | "source" (its own val subset) | "given" (a val/ folder)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.fmt, "fingerprint": self.fingerprint, "images": self.images,
                "kind": self.kind, "val": None if self.val is None else list(self.val), "dev-test": list(self.devtest)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Source:
        return cls(d["path"], d["fingerprint"], int(d["images"]), None if d["val"] is None else tuple(d["val"]),
                   tuple(d.get("dev-test") or ()), d.get("format", "auto"), d.get("kind", "track"))


@dataclass(frozen=True)
class SplitRecord:
    """What ``split.json`` holds: the sign dataset, and the background crops and added photos where a run has them."""

    dataset: Source
    background: Source | None = None
    added: Source | None = None
    added_names: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": SPLIT_FORMAT, "dataset": self.dataset.to_json(),
                "background": self.background.to_json() if self.background else None,
                "added": {**self.added.to_json(), "class_names": list(self.added_names)} if self.added else None,
                "counts": self.counts}

    @classmethod
    def read(cls, run: Path) -> SplitRecord:
        """Raises ConfigError for a run without a readable record (one trained before runs recorded their split)."""
        f = Path(run) / SPLIT_FILE
        try:
            d = json.loads(f.read_text())
            if d.get("format") != SPLIT_FORMAT:
                raise ValueError(f"format {d.get('format')!r}")
            return cls(Source.from_json(d["dataset"]), Source.from_json(d["background"]) if d.get("background") else None,
                       Source.from_json(d["added"]) if d.get("added") else None,
                       tuple((d.get("added") or {}).get("class_names") or ()), dict(d.get("counts") or {}))
        except FileNotFoundError:
            raise ConfigError(f"{run} records no split ({SPLIT_FILE}): it was trained before runs recorded which images "
                              f"they held out; retrain it with `python -m train`") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{f} is not a split record ({err}); retrain the run") from None

    def write(self, run: Path) -> Path:
        return write_text_atomic(Path(run) / SPLIT_FILE, json.dumps(self.to_json()))


@dataclass(frozen=True)
class Sets:
    train: Split
    val: Split
    devtest: Split


def _indices(ix: tuple[int, ...]) -> np.ndarray:
    return np.asarray(ix, dtype=np.int64)


def _rest(n: int, *held: tuple[int, ...]) -> np.ndarray:
    keep = np.ones(n, bool)
    for ix in held:
        keep[_indices(ix)] = False
    return np.flatnonzero(keep)


def _held_out(labels: np.ndarray, tracks: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``fraction`` of each class held out: whole tracks where known, else random images."""
    if fraction <= 0:
        return np.zeros(0, np.int64)
    if tracks is None:
        return random_split(labels, fraction, seed)[1]
    return track_split(labels, tracks, fraction, seed)[1]


def _partition(full: Split, rule: SplitRule, validate: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Validation and dev-test indices (dev-test drawn first, with a stream of its own); ``validate`` False: the source
    has its own validation subset, so only dev-test is drawn."""
    if full.tracks is None:
        print("warning: this source has no track ids; validating on a random image split, which flatters accuracy "
              "when images are near-duplicates", file=sys.stderr)
    frac = rule.devtest_fraction
    dev = _held_out(full.labels, full.tracks, frac, rule.seed + DEVTEST_SALT)
    if not validate:
        return np.zeros(0, np.int64), dev, "source"
    rest = _rest(len(full), tuple(int(i) for i in dev))
    va = _held_out(full.labels[rest], None if full.tracks is None else full.tracks[rest], rule.val_fraction / (1 - frac),
                   rule.seed)
    return rest[va], dev, "random" if full.tracks is None else "track"


def choose(data: Path, fmt: str, rule: SplitRule, *, size: int, margin: float, background: Path | None = None,
           add: Path | None = None, use_cache: bool = True, progress: bool = False) -> tuple[SplitRecord, Sets]:
    """Load the sources, choose the held-out images by ``rule``, and assemble the sets (what training does once).

    Raises:
        ConfigError: too few images or tracks to hold out a validation set.
    """
    fmt = detect_format(Path(data)) if fmt == "auto" else fmt
    full = load_dataset(data, fmt, subset="train", size=size, margin=margin, use_cache=use_cache, progress=progress)
    own_val = None
    va: np.ndarray | None
    if FORMATS[fmt].has_val(Path(data)):
        own_val = load_dataset(data, fmt, subset="val", size=size, margin=margin, use_cache=use_cache, progress=progress)
        _, dev, kind = _partition(full, rule, validate=False)
        va = None
    else:
        va, dev, kind = _partition(full, rule)
        if len(va) == 0:
            raise ConfigError(f"{data}: too few images/tracks to hold out a validation set; add data or raise --val-fraction")
    dataset = Source(str(Path(data).resolve()), full.fingerprint, len(full), None if va is None else tuple(int(i) for i in va),
                     tuple(int(i) for i in dev), fmt, kind)
    bg_src = bg = None
    if background is not None:
        bg, _ = load_background(background, size)
        _, bva = track_split(bg.labels, bg.tracks, rule.val_fraction, rule.bg_seed)  # type: ignore[arg-type]
        bg_src = Source(str(Path(background).resolve()), bg.fingerprint, len(bg), tuple(int(i) for i in bva), kind="track")
    added_src, added, added_val = None, None, None
    names: tuple[str, ...] = ()
    if add is not None:
        added, added_val, added_src = _choose_added(add, rule, size, margin, progress)
        names = added.class_names
    record = SplitRecord(dataset, bg_src, added_src, names)
    sets = _assemble(record, full, own_val, bg, added, added_val)
    return SplitRecord(dataset, bg_src, added_src, names, {"train": len(sets.train), "val": len(sets.val),
                                                           "dev-test": len(sets.devtest)}), sets


def _choose_added(folder: Path, rule: SplitRule, size: int, margin: float,
                  progress: bool) -> tuple[Split, Split | None, Source]:
    added = load_dataset(folder, "folders", subset="train", size=size, margin=margin, progress=progress)
    try:  # a val/ folder beside train/ is the held-out set as given
        given = load_dataset(folder, "folders", subset="val", size=size, margin=margin, progress=progress)
        return added, given, Source(str(Path(folder).resolve()), added.fingerprint, len(added), None, fmt="folders", kind="given")
    except DatasetFormatError:
        pass
    if rule.add_holdout <= 0:
        va = np.zeros(0, np.int64)
    elif added.tracks is not None:
        va = track_split(added.labels, added.tracks, rule.add_holdout, rule.bg_seed)[1]
    else:
        print(f"warning: {folder} gives no tracks (boxes.csv track column or <track>_<frame> names); holding out "
              f"random photos, which flatters their score if several show one sign", file=sys.stderr)
        va = random_split(added.labels, rule.add_holdout, rule.bg_seed)[1]
    return added, None, Source(str(Path(folder).resolve()), added.fingerprint, len(added), tuple(int(i) for i in va),
                               fmt="folders", kind="track" if added.tracks is not None else "random")


def concat(data: Split, more: Split, class_names: tuple[str, ...]) -> Split:
    """Two splits as one, labelled in ``class_names`` (their labels already are); its fingerprint names both."""
    def both(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        return None if a is None or b is None else np.concatenate([a, b])

    return Split(np.concatenate([data.images, more.images]), np.concatenate([data.labels, more.labels]),
                 both(data.tracks, more.tracks), class_names, f"{data.fingerprint}+{more.fingerprint}", data.source,
                 data.skipped, both(data.files, more.files), both(data.sizes, more.sizes), both(data.rois, more.rois))


def with_background(data: Split, background: Split) -> Split:
    """Append the background crops as class ``data.num_classes``."""
    relabelled = Split(background.images, np.full(len(background), data.num_classes, np.int64), background.tracks,
                       background.class_names, background.fingerprint, background.source, 0, background.files,
                       background.sizes, background.rois)
    return concat(data, relabelled, (*data.class_names, BACKGROUND_NAME))


def merged_names(base: tuple[str, ...], added: tuple[str, ...]) -> tuple[str, ...]:
    return (*base, *(n for n in added if n not in base))


def _relabel(s: Split, names: tuple[str, ...], remap: np.ndarray) -> Split:
    return Split(s.images, remap[s.labels], s.tracks, names, s.fingerprint, s.source, s.skipped, s.files, s.sizes, s.rois)


def _assemble(record: SplitRecord, full: Split, own_val: Split | None, bg: Split | None, added: Split | None,
              added_val: Split | None) -> Sets:
    """The sets from loaded sources and the recorded indices (the one place they are put together)."""
    d = record.dataset
    devtest = full.take(_indices(d.devtest))
    if d.val is None:
        if own_val is None:
            raise ConfigError(f"{d.path}: the run validated on the dataset's own val subset, which is gone; pass the data it "
                              f"was trained on")
        train_set, val_set = full.take(_rest(len(full), d.devtest)), own_val
    else:
        train_set, val_set = full.take(_rest(len(full), d.val, d.devtest)), full.take(_indices(d.val))
    if bg is not None and record.background is not None:
        b = record.background
        held = b.val or ()
        train_set = with_background(train_set, bg.take(_rest(len(bg), held)))
        val_set = with_background(val_set, bg.take(_indices(held)))
    if added is not None and record.added is not None:
        names = merged_names(train_set.class_names, added.class_names)
        remap = np.array([names.index(n) for n in added.class_names], np.int64)
        if record.added.val is None:
            if added_val is None:
                raise ConfigError(f"{record.added.path}: its val/ folder of held-out photos is gone; restore it")
            kept, held_out = _relabel(added, names, remap), _relabel(added_val, names, remap)
        else:
            kept = _relabel(added.take(_rest(len(added), record.added.val)), names, remap)
            held_out = _relabel(added.take(_indices(record.added.val)), names, remap)
        train_set, val_set = concat(train_set, kept, names), concat(val_set, held_out, names)
    return Sets(train_set, val_set, devtest)


def _check(src: Source, loaded: Split, given: Path | None, what: str, run: Path) -> None:
    """The loaded source is the one the run recorded: the same fingerprint, or (a copy, a remount: its files' times
    changed) the same number of images, said in a warning when the folder is another one."""
    if loaded.fingerprint == src.fingerprint:
        return
    if len(loaded) != src.images:
        raise OtherDataError(f"{loaded.source or given} has {len(loaded)} images but {run} was trained on {src.images} of "
                          f"{src.path}; pass the {what} it was trained on")
    here = Path(given).resolve() if given is not None else Path(src.path)
    if here != Path(src.path).resolve():
        print(f"warning: {given} is not the data {run} was trained on; its 'val' split may overlap training",
              file=sys.stderr)


def assemble(run: Path, record: SplitRecord, *, size: int, margin: float, data: Path | None = None,
             fmt: str = "auto", progress: bool = False) -> Sets:
    """A run's sets rebuilt from its record and its sources on disk (``data``: another copy of the sign dataset).

    Raises:
        ConfigError: a source is gone, or holds another number of images than the run recorded.
    """
    d = record.dataset
    source = Path(d.path) if data is None else Path(data)
    if not source.exists():
        raise ConfigError(f"the training data {source} is gone; pass --data a copy of it")
    fmt = d.fmt if fmt == "auto" and data is None else fmt
    fmt = detect_format(source) if fmt == "auto" else fmt
    full = load_dataset(source, fmt, subset="train", size=size, margin=margin, progress=progress)
    _check(d, full, data, "dataset", run)
    own_val = load_dataset(source, fmt, subset="val", size=size, margin=margin, progress=progress) if d.val is None else None
    bg = added = added_val = None
    if record.background is not None:
        b = Path(record.background.path)
        if not b.is_dir():
            raise ConfigError(f"the background crops {b} of {run} are gone; restore them or retrain the run")
        bg, _ = load_background(b, size)
        _check(record.background, bg, None, "background crops", run)
    if record.added is not None:
        a = Path(record.added.path)
        if not a.is_dir():
            raise ConfigError(f"the added photos {a} of {run} are gone; restore them or retrain the run")
        added = load_dataset(a, "folders", subset="train", size=size, margin=margin, progress=progress)
        _check(record.added, added, None, "added photos", run)
        if record.added.val is None:
            added_val = load_dataset(a, "folders", subset="val", size=size, margin=margin, progress=progress)
    return _assemble(record, full, own_val, bg, added, added_val)
