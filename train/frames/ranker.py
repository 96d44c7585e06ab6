"""Fit the proposal ranker: per-cue logistic weights that put real signs first among the candidates.

    python -m train.frames.ranker --frames data/GTSDB/train --score data/GTSDB/test

Every candidate of the chosen frames (``runtime.proposals.candidates``) is a positive when its box
has IoU >= 0.5 with an annotated sign, else a negative; each cue gets an L2-regularised logistic
regression (Newton's method, numpy only) over the cheap features the runtime computes anyway. The
weights go to a JSON file (a few dozen numbers) with the frames they came from, so ``bench.gtsdb``
can leave those frames out; ``--packaged`` replaces the runtime's own ranking instead, the one every
command uses without ``--ranker``. It prints proposal recall at the default cap on frames it was
*not* fitted on (the rest of ``--frames``, and the folder ``--score``), for the fitted ranking and
for the fill-ratio ranking it replaces.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from runtime.annotations import Annotation, fitted_on, frame_files, read_frame, select_frames
from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.proposals import FEATURES, RANKER_FILE, Candidates, ProposalConfig, Ranker, candidates, propose
from runtime.roi import iou_matrix

DEFAULT_OUT = Path("runs/proposal_ranker.json")


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> np.ndarray:
    """Weights of an L2-regularised logistic regression (the bias, column 0, is not penalised)."""
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 1e-6
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def collect(frames: dict[str, np.ndarray], gt: dict[str, list[Annotation]], cfg: ProposalConfig,
            progress: bool = True) -> list[tuple[Candidates, np.ndarray]]:
    """Candidates of each frame with their labels (IoU >= 0.5 with an annotated sign)."""
    out = []
    for stem, frame in tqdm(frames.items(), desc="candidates", unit="frame", disable=not progress, file=sys.stderr):
        c = candidates(frame, cfg)
        truth = [a.box for a in gt.get(stem, [])]
        pos = iou_matrix(c.boxes, truth).max(axis=1) >= 0.5 if truth and len(c.cue) else np.zeros(len(c.cue), bool)
        out.append((c, pos))
    return out


def fit(data: list[tuple[Candidates, np.ndarray]], cfg: ProposalConfig, l2: float = 1.0) -> dict[str, tuple[float, ...]]:
    weights = {}
    feats = np.vstack([c.features for c, _ in data])
    cues = np.concatenate([c.cue for c, _ in data])
    labels = np.concatenate([p for _, p in data]).astype(np.float64)
    for ci, cue in enumerate(cfg.cues):
        sel = cues == ci
        n_pos, n = labels[sel].sum(), int(sel.sum())
        if n_pos >= 2:
            w = fit_logistic(feats[sel], labels[sel], l2)
        else:  # too few signs to learn from: a constant score, the cue's (smoothed) hit rate
            w = np.zeros(len(FEATURES))
            w[0] = np.log((n_pos + 1) / (n - n_pos + 1))
        weights[cue.name] = tuple(float(v) for v in w)
    return weights


def proposal_recall(frames: dict[str, np.ndarray], gt: dict[str, list[Annotation]], cfg: ProposalConfig,
                    ranker: Ranker) -> tuple[float, float]:
    """Share of annotated signs with a proposal at IoU >= 0.5, and proposals per frame."""
    hit = total = n_props = 0
    for stem, frame in frames.items():
        boxes = [p.box for p in propose(frame, cfg, ranker)]
        truth = [a.box for a in gt.get(stem, [])]
        n_props += len(boxes)
        total += len(truth)
        if truth and boxes:
            hit += int((iou_matrix(truth, boxes).max(axis=1) >= 0.5).sum())
    return hit / max(total, 1), n_props / max(len(frames), 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.frames.ranker", formatter_class=HelpFormatter,
        description="Fit the proposal ranking on annotated road frames.\n\nNumpy only; seconds.",
        epilog="examples:\n  python -m train.frames.ranker --frames data/GTSDB/train --score data/GTSDB/test\n"
               "  python -m train.frames.ranker --frames data/GTSDB/train --subset even --out runs/ranker-even.json",
    )
    p.add_argument("--frames", type=Path, nargs="+", required=True, help="folders of frames + gt.txt to fit on")
    p.add_argument("--subset", default="all", choices=("even", "odd", "all"),
                   help="frames of each --frames folder to fit on (the others are scored; bench.gtsdb leaves these out)")
    p.add_argument("--score", type=Path, default=None,
                   help="another frame folder to report proposal recall on (frames that fit nothing)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ranker JSON to write")
    out.add_argument("--packaged", action="store_true",
                     help=f"replace the runtime's own ranking ({RANKER_FILE.name} in the installed package), which every "
                          f"command without --ranker uses")
    p.add_argument("--l2", type=float, default=1.0, help="L2 penalty on the weights")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def fit_ranker(folders: Sequence[Path], subset: str = "all", l2: float = 1.0, score: Path | None = None,
               progress: bool = True) -> dict[str, Any]:
    """The fitted ranker's JSON record, with proposal recall on the frames it was not fitted on.

    Raises:
        ConfigError: no frames in the subset, or no candidate on a sign.
    """
    cfg = ProposalConfig()
    data: list[tuple[Candidates, np.ndarray]] = []
    fitted, scored = [], []
    for folder in folders:
        files, gt = frame_files(folder)
        fit_on = select_frames(sorted(files), subset)
        if not fit_on:
            raise ConfigError(f"{folder}: no frames for --subset {subset}")
        frames = {stem: read_frame(path, gt.get(stem, ())) for stem, path in files.items()}
        data += collect({s: frames[s] for s in fit_on}, gt, cfg, progress=progress)
        fitted.append(fitted_on(folder, fit_on))
        held_out = [s for s in sorted(files) if s not in set(fit_on)]
        if held_out:
            scored.append((f"{len(held_out)} held-out frames of {folder}", {s: frames[s] for s in held_out}, gt))
    n_pos = int(sum(p.sum() for _, p in data))
    if n_pos == 0:
        raise ConfigError(f"{', '.join(map(str, folders))}: no candidate of the --subset {subset} frames matches a sign in gt.txt")
    ranker = Ranker(fit(data, cfg, l2), tuple(fitted))
    record: dict[str, Any] = {"features": list(FEATURES), "weights": {k: list(v) for k, v in ranker.weights.items()},
                              "fitted_on": fitted, "subset": subset, "candidates": int(sum(len(p) for _, p in data)),
                              "positives": n_pos, "l2": l2}
    if score:
        score_files, score_gt = frame_files(score)
        scored.append((f"{len(score_files)} frames of {score}", {s: read_frame(p, score_gt.get(s, ())) for s, p in score_files.items()}, score_gt))
    for where, held, truth in scored:
        for name, r in (("fitted ranking", ranker), ("fill-ratio ranking", Ranker())):
            rec, per_frame = proposal_recall(held, truth, cfg, r)
            record.setdefault("held_out", {}).setdefault(where, {})[name] = {"recall": rec, "proposals_per_frame": per_frame}
            print(f"{name:<18} on {where}: proposal recall {rec:.3f} at {per_frame:.1f} proposals/frame")
    return record


@cli_errors("python -m train.frames.ranker")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    record = fit_ranker(args.frames, args.subset, args.l2, args.score, progress=not args.quiet)
    out = RANKER_FILE if args.packaged else args.out
    write_text_atomic(ensure_writable_dir(out.parent) / out.name, json.dumps(record, indent=2) + "\n")
    frames = sum(len(f["frames"]) for f in record["fitted_on"])
    print(f"fitted {len(record['weights'])} cues on {frames} frames ({record['candidates']} candidates, "
          f"{record['positives']} on signs) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
