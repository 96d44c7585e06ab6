"""The report's pictures: the Pareto view, int8's per-class losses, confusion matrices, latency, thresholds, galleries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from train.plots import save_figure

COLOURS = {"tflite-f32": "tab:blue", "tflite-f16": "tab:cyan", "tflite-dynamic": "tab:olive", "tflite-int8": "tab:red",
           "onnx-f32": "tab:purple", "onnx-int8": "tab:orange"}


def pareto(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy against median ms per ROI (1 thread), marker area by size; the front joins the builds nothing beats."""
    pts = [r for r in rows if r.get("accuracy") is not None and r.get("p50_ms_t1") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    xs, ys = [r["p50_ms_t1"] for r in pts], [100 * r["accuracy"] for r in pts]
    # a label is ~15 % of the x range wide: builds closer than that get their labels stacked, not overprinted
    dx, dy = 0.15 * (max(xs, default=1) - min(xs, default=0) or 1), 0.08 * (max(ys, default=1) - min(ys, default=0) or 1)
    placed: list[tuple[float, float, int]] = []
    for r, x, y in sorted(zip(pts, xs, ys), key=lambda t: (t[1], -t[2])):
        ax.scatter(x, y, s=max(r["size_kb"], 20) / 3, alpha=0.6,
                   color=COLOURS.get(r["build"], "grey"), edgecolor="k", label=f"{r['build']} ({r['size_kb']:.0f} KB)")
        taken = {k for px, py, k in placed if abs(x - px) < dx and abs(y - py) < dy}
        level = min(set(range(len(placed) + 1)) - taken)
        ax.annotate(r["build"], (x, y), textcoords="offset points", xytext=(6, 6 + 10 * level), fontsize=8)
        placed.append((x, y, level))
    front: list[dict[str, Any]] = []
    for r in sorted(pts, key=lambda r: (r["p50_ms_t1"], -r["accuracy"])):
        if not front or r["accuracy"] > front[-1]["accuracy"]:
            front.append(r)
    if len(front) > 1:
        ax.plot([r["p50_ms_t1"] for r in front], [100 * r["accuracy"] for r in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("median ms per ROI, 1 thread (lower is better)")
    ax.set_ylabel("accuracy % (higher is better)")
    ax.set_title("accuracy vs latency; marker area = file size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def class_deltas(names: Sequence[str], float_recall: np.ndarray, builds: dict[str, np.ndarray], support: np.ndarray,
                 path: Path) -> Path:
    """Per-class recall of each quantized build minus the float model's, in pp (classes with images only)."""
    present = np.flatnonzero(support > 0)
    fig, ax = plt.subplots(figsize=(max(8, len(present) * 0.22), 4.2))
    width = 0.8 / max(len(builds), 1)
    for i, (name, recall) in enumerate(builds.items()):
        ax.bar(np.arange(len(present)) + i * width, 100 * (recall[present] - float_recall[present]), width,
               color=COLOURS.get(name, "grey"), label=name)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(present)) + 0.4 - width / 2, [str(c) for c in present], fontsize=6)
    ax.set_xlabel("class id")
    ax.set_ylabel("recall change vs float (pp)")
    lowest = np.min([r[present] - float_recall[present] for r in builds.values()], axis=0) if builds else np.zeros(0)
    if lowest.size and lowest.min() < 0:
        worst = present[int(np.argmin(lowest))]
        note = f" (worst: {worst} {names[worst][:30]}, {100 * lowest.min():+.1f} pp)"
    else:
        note = " (no class lost recall)"
    ax.set_title("per-class recall: quantized minus float" + note)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def confusions(names: Sequence[str], matrices: dict[str, np.ndarray], path: Path) -> Path:
    """Row-normalised confusion matrices side by side, off-diagonal cells marked."""
    n = len(names)
    fig, axes = plt.subplots(1, len(matrices), figsize=(6.2 * len(matrices), 5.8), squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices.items()):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i, j in zip(*np.nonzero((cm > 0) & ~np.eye(n, dtype=bool))):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=5, color="crimson")
        ax.set_title(f"{title}: {int(np.trace(cm))}/{int(cm.sum())} right")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ticks = range(0, n, max(1, n // 22))
        ax.set_xticks(list(ticks), [str(t) for t in ticks], fontsize=6)
        ax.set_yticks(list(ticks), [str(t) for t in ticks], fontsize=6)
    return save_figure(fig, path)


def latency(timings: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """Per-call times of each build (box plot, log scale), from pytest-benchmark's raw rounds."""
    names = list(timings)
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(names) + 1.6))
    ax.boxplot([1000 * np.asarray(timings[n]) for n in names], vert=False, showfliers=True, whis=(5, 95),
               flierprops={"markersize": 2, "alpha": 0.4})
    ax.set_yticks(range(1, len(names) + 1), names)
    ax.set_xscale("log")
    ax.set_xlabel("ms per call (whiskers: 5th-95th percentile)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def thresholds(curves: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """Right / wrong / not-sure fractions against the unknown threshold (notebook A's study), per model."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    for ax, key in zip(axes, ("right", "wrong", "unsure")):
        for name, c in curves.items():
            ax.plot(c["threshold"], c[key], color=COLOURS.get(name, "k"), label=name, lw=1.2)
        ax.set_title(key if key != "unsure" else "not sure (below threshold)")
        ax.set_xlabel("threshold on the top probability")
        ax.grid(alpha=0.3)
    axes[1].set_yscale("symlog", linthresh=1e-3)
    axes[0].set_ylabel("fraction of images")
    axes[2].legend(fontsize=7)
    return save_figure(fig, path)
