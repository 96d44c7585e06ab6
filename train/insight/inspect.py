"""Look at a dataset before training on it: balance, sizes, brightness, tracks, and duplicates across splits.

    python -m train.insight.inspect --data data/GTSRB
    python -m train.insight.inspect --data data/GTSRB --out reports/gtsrb --val-fraction 0.1 --seed 0

Writes OUT/summary.md with a per-class table and OUT/*.png: class balance per split (train, the
validation tracks training would hold out, and test where the dataset has one), original image and
sign (ROI) sizes, per-class mean-brightness histograms, the darkest and brightest image of every
class, and near-duplicate images found in two splits (which would make a validation score lie).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.cli import HelpFormatter
from runtime.errors import DatasetFormatError, cli_errors
from train.config import TrainConfig
from train.data import Split, check_data_path, detect_format, load_dataset
from train.data.formats import FORMATS
from train.plots import gallery, save_figure
from train.splits import SplitRule, choose

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def brightness(images: np.ndarray) -> np.ndarray:
    """Mean luma (0..255) of each RGB crop."""
    return (images.astype(np.float32) @ LUMA).mean(axis=(1, 2))


def average_hash(images: np.ndarray) -> np.ndarray:
    """A 64-bit perceptual hash per crop: 8x8 grey thumbnail, each pixel above or below the thumbnail's mean."""
    grey = (images.astype(np.float32) @ LUMA)
    small = np.stack([cv2.resize(g, (8, 8), interpolation=cv2.INTER_AREA) for g in grey]) if len(grey) else np.zeros((0, 8, 8))
    bits = (small > small.mean(axis=(1, 2), keepdims=True)).reshape(len(small), 64)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


_POPCOUNT = np.array([i.bit_count() for i in range(256)], np.uint8)


def hamming(a: int, b: np.ndarray) -> np.ndarray:
    """Bits that differ between hash ``a`` and each hash of ``b``."""
    x = np.bitwise_xor(b, np.uint64(a))
    return _POPCOUNT[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


@dataclass(frozen=True)
class DuplicatePair:
    split_a: str
    index_a: int
    split_b: str
    index_b: int
    corr: float  # correlation of the two crops after each is standardised (1: identical up to brightness/contrast)


def _standardised(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32).reshape(len(images), -1)
    x -= x.mean(axis=1, keepdims=True)
    return x / np.maximum(x.std(axis=1, keepdims=True), 1.0)


def cross_duplicates(splits: dict[str, Split], max_bits: int = 6, min_corr: float = 0.97, limit: int = 10_000) -> list[DuplicatePair]:
    """Images of one split that nearly are an image of another split.

    Candidates are pairs whose average hashes are within ``max_bits``; a hash alone matches any two
    dim, flat crops (on GTSRB four in five such pairs are of different classes), so a pair counts only
    when the standardised crops correlate by ``min_corr`` or more. On GTSRB, consecutive frames of one
    track (the same sign a moment later) correlate by 0.89 at the median: 0.97 is "the same image"."""
    hashes = {name: average_hash(s.images) for name, s in splits.items()}
    flat = {name: _standardised(s.images) for name, s in splits.items()}
    names = list(splits)
    pairs: list[DuplicatePair] = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            big, small = (a, b) if len(hashes[a]) >= len(hashes[b]) else (b, a)
            for j, h in enumerate(hashes[small]):
                cand = np.flatnonzero(hamming(int(h), hashes[big]) <= max_bits)
                if not len(cand):
                    continue
                corr = flat[big][cand] @ flat[small][j] / flat[small].shape[1]
                k = int(np.argmax(corr))
                if corr[k] >= min_corr and len(pairs) < limit:
                    pairs.append(DuplicatePair(small, j, big, int(cand[k]), float(corr[k])))
    return pairs


def load_splits(data: Path, fmt: str = "auto", size: int = 32, val_fraction: float = 0.1, seed: int = 0,
                progress: bool = True) -> dict[str, Split]:
    """Train and validation as training would split them (held-out tracks), and test where there is one."""
    check_data_path(data)
    fmt = detect_format(data) if fmt == "auto" else fmt
    _, sets = choose(data, fmt, SplitRule(val_fraction, 0.0, seed, seed), size=size, margin=TrainConfig.margin,
                     progress=progress)
    out = {"train": sets.train, "val": sets.val}
    try:
        out["test"] = load_dataset(data, fmt, subset="test", size=size, progress=progress)
    except DatasetFormatError as err:  # no test subset is normal: say so and go on
        print(f"note: no test subset ({str(err).splitlines()[0][:100]})", file=sys.stderr)
    return out


def plot_balance(splits: dict[str, Split], names: Sequence[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.25), 4))
    bottom = np.zeros(len(names))
    for split, colour in zip(splits, ("tab:blue", "tab:orange", "tab:green")):
        counts = np.bincount(splits[split].labels, minlength=len(names))[: len(names)]
        ax.bar(range(len(names)), counts, bottom=bottom, color=colour, label=f"{split} ({counts.sum()})")
        bottom += counts
    ax.set_xticks(range(len(names)), [str(i) for i in range(len(names))], fontsize=6)
    ax.set_xlabel("class id")
    ax.set_ylabel("images")
    ax.set_title(f"class balance: {int(bottom.min())} to {int(bottom.max())} images per class")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def plot_sizes(split: Split, path: Path) -> Path | None:
    if split.sizes is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    w, h = split.sizes[:, 0], split.sizes[:, 1]
    axes[0].hist2d(w, h, bins=40, cmap="Blues", cmin=1)
    axes[0].set_xlabel("image width")
    axes[0].set_ylabel("image height")
    axes[0].set_title(f"original images: median {int(np.median(w))}x{int(np.median(h))}, {w.min()}..{w.max()} wide")
    if split.rois is not None and (split.rois[:, 0] >= 0).any():
        r = split.rois[split.rois[:, 0] >= 0]
        side = np.maximum(r[:, 2] - r[:, 0], r[:, 3] - r[:, 1])
        axes[1].hist(side, bins=50, color="tab:orange")
        axes[1].set_title(f"sign (ROI) side: median {int(np.median(side))} px; {100 * (side < 32).mean():.0f} % below 32 px")
        axes[1].set_xlabel("ROI side, px")
    else:
        axes[1].text(0.1, 0.5, "no ROIs in this dataset: whole images")
    return save_figure(fig, path)


def plot_brightness(split: Split, names: Sequence[str], path: Path) -> Path:
    """Per-class histograms of mean brightness, in small multiples."""
    b = brightness(split.images)
    n = len(names)
    cols = 9
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.7, rows * 1.3), sharex=True, squeeze=False)
    for c, ax in enumerate(axes.flat):
        if c >= n:
            ax.axis("off")
            continue
        vals = b[split.labels == c]
        ax.hist(vals, bins=np.linspace(0, 255, 26).tolist(), color="tab:gray")
        ax.set_title(f"{c} {names[c][:16]}", fontsize=6)
        ax.tick_params(labelsize=5)
        if len(vals):
            ax.axvline(float(np.median(vals)), color="crimson", lw=0.8)
    fig.suptitle("mean brightness per image, per class (red: median); 0 = black, 255 = white", fontsize=9)
    return save_figure(fig, path)


def extremes(split: Split, names: Sequence[str], path: Path) -> Path:
    """The darkest and the brightest image of each class."""
    b = brightness(split.images)
    picks, caps, colours = [], [], []
    for c in range(len(names)):
        idx = np.flatnonzero(split.labels == c)
        if not len(idx):
            continue
        for which, i in (("darkest", idx[np.argmin(b[idx])]), ("brightest", idx[np.argmax(b[idx])])):
            picks.append(i)
            caps.append(f"{c} {which}\n{b[i]:.0f}")
            colours.append("k")
    return gallery(split.images[np.array(picks, int)], caps, path, "darkest and brightest image of each class", colours, cols=12)


def summary_rows(splits: dict[str, Split], names: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    train = splits["train"]
    b = brightness(train.images)
    for c, name in enumerate(names):
        sel = train.labels == c
        row: dict[str, Any] = {"class": c, "name": name}
        for split, s in splits.items():
            row[split] = int((s.labels == c).sum())
        tracks = {t for s in splits.values() if s.tracks is not None for t in s.tracks[s.labels == c]}
        row["tracks"] = len(tracks) if tracks else None
        row["brightness"] = float(np.median(b[sel])) if sel.any() else None
        row["dark_share"] = float((b[sel] < 40).mean()) if sel.any() else None
        rows.append(row)
    return rows


def inspect(data: Path, out: Path, fmt: str = "auto", val_fraction: float = 0.1, seed: int = 0,
            progress: bool = True) -> Path:
    """Write the pictures and summary.md; return the summary's path."""
    out = ensure_writable_dir(out, "--out")
    splits = load_splits(data, fmt, 32, val_fraction, seed, progress)
    names = splits["train"].class_names
    pics = [("Class balance", plot_balance(splits, names, out / "class_balance.png")),
            ("Image and sign sizes", plot_sizes(splits["train"], out / "sizes.png")),
            ("Brightness per class", plot_brightness(splits["train"], names, out / "brightness.png")),
            ("Darkest and brightest", extremes(splits["train"], names, out / "extremes.png"))]
    dups = cross_duplicates(splits)
    if dups:
        shown = dups[:24]
        imgs = np.concatenate([np.stack([splits[d.split_a].images[d.index_a], splits[d.split_b].images[d.index_b]]) for d in shown])
        caps = [c for d in shown for c in (f"{d.split_a} #{d.index_a} {splits[d.split_a].labels[d.index_a]}",
                                           f"{d.split_b} #{d.index_b} {splits[d.split_b].labels[d.index_b]} (r {d.corr:.3f})")]
        pics.append(("Near-duplicates across splits", gallery(imgs, caps, out / "duplicates.png",
                                                              f"{len(dups)} near-duplicate pairs across splits (first {len(shown)})",
                                                              cols=8)))
    rows = summary_rows(splits, names)
    total = {k: len(s) for k, s in splits.items()}
    lines = [f"# Dataset: {data}", "",
             "Images: " + ", ".join(f"{k} {v}" for k, v in total.items())
             + f" (validation: {val_fraction:g} of each class's tracks, seed {seed}, as `python -m train` holds them out)", ""]
    def same_class(d: DuplicatePair) -> bool:
        return bool(splits[d.split_a].labels[d.index_a] == splits[d.split_b].labels[d.index_b])

    def count(pairs: list[DuplicatePair]) -> str:
        by_pair: dict[tuple[str, str], int] = {}
        for d in pairs:
            by_pair[(d.split_a, d.split_b)] = by_pair.get((d.split_a, d.split_b), 0) + 1
        return ", ".join(f"{a} vs {b}: {n}" for (a, b), n in by_pair.items())

    leaks, lookalikes = [d for d in dups if same_class(d)], [d for d in dups if not same_class(d)]
    if leaks:
        lines += [(f"**Warning: {len(leaks)} near-duplicate images of the same class across splits** ({count(leaks)}; "
                  "standardised crops correlating by 0.97 or more): a held-out image that is nearly in training flatters "
                  "its score."), ""]
    else:
        lines += ["No near-duplicate images of the same class across splits (standardised crops correlating by 0.97 or more).", ""]
    if lookalikes:
        lines += [(f"{len(lookalikes)} near-identical crops of *different* classes across splits ({count(lookalikes)}): the "
                  "same scene around another sign (e.g. one pole, one sky). A model can lean on such backgrounds."), ""]
    cols = ["class", "name", *splits, "tracks", "brightness", "dark_share"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [str(r[c]) if not isinstance(r[c], float) else (f"{100 * r[c]:.1f} %" if c == "dark_share" else f"{r[c]:.0f}")
                 for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "brightness: median of the images' mean luma (0-255); dark_share: images darker than 40.", ""]
    lines += [f"![{t}]({p.name})" for t, p in pics if p is not None]
    summary = out / "summary.md"
    write_text_atomic(summary, "\n".join(lines) + "\n")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.insight.inspect", formatter_class=HelpFormatter,
        description="Class balance, sizes, brightness, tracks and cross-split duplicates of a dataset, as PNGs and Markdown.",
        epilog="examples:\n  python -m train.insight.inspect --data data/GTSRB\n"
               "  python -m train.insight.inspect --data data/GTSRB --out reports/gtsrb --val-fraction 0.1 --seed 0",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder, zip or pickle")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", *FORMATS), help="the dataset's layout")
    p.add_argument("--out", type=Path, default=None, help="folder for the summary and pictures (default: reports/inspect-NAME)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="the validation share training would hold out")
    p.add_argument("--seed", type=int, default=0, help="which tracks are held out (as python -m train --seed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_errors("python -m train.insight.inspect")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error("--val-fraction must be between 0 and 1")
    out = args.out or Path("reports") / f"inspect-{args.data.resolve().name}"
    summary = inspect(args.data, out, args.fmt, args.val_fraction, args.seed, progress=not args.quiet)
    print(summary.read_text().split("\n| class")[0].strip())
    print(f"summary: {summary} (pictures beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
