"""Where a model errs: a per-image CSV, galleries, per-class accuracy, confidence, and which classes get confused.

What notebook A dumped as files and notebook B looked at as per-class average probability vectors,
for any model's probabilities on a labelled split: ``bench.evaluate`` (Keras) and ``bench.report``
(each build) both write it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from runtime.atomic import atomic_path, ensure_writable_dir, write_bytes_atomic
from runtime.metrics import classification_report
from train.plots import gallery, save_figure


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.()-]+", "_", text).strip("_")[:48] or "x"


def write_predictions_csv(path: Path, probs: np.ndarray, labels: np.ndarray, files: Sequence[str] | None,
                          class_names: Sequence[str], k: int = 3) -> Path:
    """One row per image: file, truth, prediction, score, right, and the top-k classes with their probabilities."""
    top = np.argsort(-probs, axis=1)[:, :k]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "truth", "truth_name", "prediction", "prediction_name", "score", "right",
                    *[f"top{i + 1}" for i in range(k)]])
        for i in range(len(labels)):
            p = int(top[i, 0])
            w.writerow([files[i] if files is not None else i, int(labels[i]), class_names[labels[i]], p, class_names[p],
                        f"{probs[i, p]:.4f}", int(p == labels[i]), *[f"{int(c)}:{probs[i, c]:.4f}" for c in top[i]]])
    return path


def dump_errors(folder: Path, images: np.ndarray, probs: np.ndarray, labels: np.ndarray, files: Sequence[str] | None,
                class_names: Sequence[str]) -> list[Path]:
    """Every wrong crop as ``<image>__<truth>__as__<prediction>.png`` (notebook A's error dump)."""
    folder = ensure_writable_dir(folder, "--dump-errors")
    pred = probs.argmax(1)
    out = []
    for i in (int(j) for j in np.flatnonzero(pred != labels)):
        stem = Path(str(files[i])).stem if files is not None else f"{i:06d}"
        path = folder / f"{_name(stem)}__{_name(class_names[labels[i]])}__as__{_name(class_names[pred[i]])}.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
        if ok:
            out.append(write_bytes_atomic(path, png.tobytes()))
    return out


def plot_class_accuracy(recall: np.ndarray, support: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> Path:
    present = np.flatnonzero(support > 0)
    fig, ax = plt.subplots(figsize=(max(8, len(present) * 0.24), 4))
    colours = ["crimson" if r < 0.95 else "tab:blue" for r in recall[present]]
    ax.bar(range(len(present)), 100 * recall[present], color=colours)
    ax.set_xticks(range(len(present)), [str(c) for c in present], fontsize=6)
    ax.set_ylim(max(0, 100 * recall[present].min() - 5) if len(present) else 0, 100.5)
    ax.set_xlabel("class id (red: below 95 %)")
    ax.set_ylabel("recall %")
    worst = present[np.argsort(recall[present])[:3]]
    ax.set_title(f"{title}; lowest: " + ", ".join(f"{c} {class_names[c][:22]} {100 * recall[c]:.1f}%" for c in worst), fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def plot_confidence(probs: np.ndarray, labels: np.ndarray, path: Path, title: str) -> Path:
    """The top probability of right and of wrong predictions: where a threshold would separate them."""
    top, right = probs.max(1), probs.argmax(1) == labels
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bins = [float(b) for b in np.linspace(0, 1, 41)]
    ax.hist(top[right], bins=bins, alpha=0.7, color="tab:green", label=f"right ({right.sum()})")
    ax.hist(top[~right], bins=bins, alpha=0.8, color="crimson", label=f"wrong ({(~right).sum()})")
    ax.set_yscale("log")
    ax.set_xlabel("top probability")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def mean_probabilities(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Row c: the average probability vector of the images of class c (notebook B's confusion view)."""
    out = np.zeros((num_classes, probs.shape[1]))
    for c in range(num_classes):
        sel = labels == c
        if sel.any():
            out[c] = probs[sel].mean(0)
    return out


def plot_mean_probabilities(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> Path:
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(6, n * 0.28), max(5, n * 0.26)))
    im = ax.imshow(np.sqrt(matrix), cmap="magma", vmin=0, vmax=1)  # sqrt: the small confusions show
    off = matrix * (1 - np.eye(*matrix.shape))
    for i, j in zip(*np.nonzero(off >= 0.02)):
        ax.text(j, i, f"{100 * matrix[i, j]:.0f}", ha="center", va="center", fontsize=5, color="cyan")
    ax.set_xticks(range(n), [str(i) for i in range(n)], fontsize=6)
    ax.set_yticks(range(n), [f"{i} {name[:28]}" for i, name in enumerate(class_names)], fontsize=6)
    ax.set_xlabel("class (average probability; off-diagonal % >= 2 written)")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03, label="sqrt(mean probability)")
    return save_figure(fig, path)


def error_analysis(probs: np.ndarray, labels: np.ndarray, images: np.ndarray, files: Sequence[str] | None,
                   class_names: Sequence[str], out: Path, title: str, prefix: str = "", seed: int = 0) -> dict[str, Path]:
    """Write the CSV and the pictures; return them by name."""
    out = ensure_writable_dir(out, "--out")
    k = len(class_names)
    rep = classification_report(labels, probs.argmax(1), k)
    pred, top = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(pred != labels)
    worst = wrong[np.argsort(-top[wrong])][:32]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(labels), size=min(32, len(labels)), replace=False)) if len(labels) else np.zeros(0, int)

    def caption(i: int) -> str:
        return f"{class_names[labels[i]][:16]}\nas {class_names[pred[i]][:16]}\n{top[i]:.2f}"

    paths = {
        "predictions": write_predictions_csv(out / f"{prefix}predictions.csv", probs, labels, files, class_names),
        "errors": gallery(images[worst], [caption(i) for i in worst], out / f"{prefix}gallery_errors.png",
                          f"{title}: the {len(worst)} surest of {len(wrong)} errors", ["crimson"] * len(worst)),
        "random": gallery(images[sample], [caption(i) for i in sample], out / f"{prefix}gallery_random.png",
                          f"{title}: {len(sample)} random images (green right, red wrong)",
                          ["green" if pred[i] == labels[i] else "crimson" for i in sample]),
        "class_accuracy": plot_class_accuracy(rep.recall, rep.support, class_names, out / f"{prefix}class_accuracy.png",
                                              f"{title}: recall per class"),
        "confidence": plot_confidence(probs, labels, out / f"{prefix}confidence.png", f"{title}: top probability, right vs wrong"),
        "mean_probabilities": plot_mean_probabilities(mean_probabilities(probs, labels, k), class_names,
                                                      out / f"{prefix}mean_probabilities.png",
                                                      f"{title}: average probability vector per true class"),
    }
    return paths
