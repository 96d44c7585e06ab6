"""Pictures people would rather look at than read: training curves and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from runtime.atomic import atomic_path


def save_figure(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_history(history: dict[str, list[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training vs validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            vals = history.get(prefix + key)
            if vals:
                ax.plot(range(1, len(vals) + 1), vals, style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if history.get("val_accuracy"):
        best = int(np.argmax(history["val_accuracy"]))
        axes[1].annotate(f"best {history['val_accuracy'][best]:.4f}", (best + 1, history["val_accuracy"][best]),
                         textcoords="offset points", xytext=(-60, -25), arrowprops={"arrowstyle": "->"})
    return save_figure(fig, path)


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: truth, columns: prediction)."""
    n = len(class_names)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6, n * 0.28), max(5, n * 0.26)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(i) for i in range(n)], fontsize=6)
    ax.set_yticks(range(n), [f"{i} {name[:28]}" for i, name in enumerate(class_names)], fontsize=6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i, j in zip(*np.nonzero((cm > 0) & ~np.eye(n, dtype=bool))):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=5, color="crimson")
    ax.set_title(title or "confusion matrix (off-diagonal counts in red)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return save_figure(fig, path)


def plot_threshold_curve(curve: dict[str, np.ndarray], chosen: float, path: Path, title: str) -> Path:
    """Right / wrong / not-sure fractions against the threshold on the top probability, the chosen one marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, colour in (("right", "tab:green"), ("wrong", "tab:red"), ("unsure", "tab:gray")):
        ax.plot(curve["threshold"], curve[key], color=colour, label=key)
    ax.axvline(chosen, ls="--", color="k", label=f"threshold {chosen:.3f}")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("threshold on the top probability")
    ax.set_ylabel("fraction of validation images")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def gallery(images: np.ndarray, captions: Sequence[str], path: Path, title: str, colours: Sequence[str] | None = None,
            cols: int = 8) -> Path:
    """A grid of crops with a caption under each (truth, prediction, score)."""
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.95), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], interpolation="nearest")
            ax.set_title(captions[k], fontsize=6, color=(colours[k] if colours else "k"))
    if n == 0:
        axes[0, 0].text(0, 0.5, "none", fontsize=12)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
