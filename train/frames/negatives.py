"""Mine "not a sign" crops from road frames, for a background class the classifier can answer with.

    python -m train.frames.negatives --frames data/GTSDB/train --out runs/negatives
    python -m train --data data/GTSRB --background runs/negatives

Crops come from a wide pool of built-in proposals (the hard negatives the runtime will meet, not
only the most sign-like) and from random boxes of sign size, all with IoU < 0.1 to every annotated
sign, holding no more than a quarter of any sign (a box four times a sign's side has IoU < 0.1
with it, yet the sign is plain to see in the crop), and none a near-copy of another (IoU < 0.5);
with ``--sign-map``, a learned map's boxes are taken first. Each crop is the box plus the
classifier's margin, as the runtime would cut it. ``negatives.json`` records the frames used, so
``bench.gtsdb`` can leave them out of its scores: a frame that trained the model cannot test it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from runtime.annotations import fitted_on, frame_files, frames_fitted, read_frame, select_frames
from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.preprocess import expand_box
from runtime.proposals import ProposalConfig, Ranker, propose
from runtime.roi import iou_matrix
from runtime.sign_map import SignMap

MAX_SIGN_SHARE = 0.25  # of a sign's area a negative may hold


def sign_share(box: Sequence[float], signs: Sequence[Sequence[float]]) -> float:
    """The largest fraction of one sign's area that lies inside ``box`` (0 without signs)."""
    if not signs:
        return 0.0
    s = np.asarray(signs, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(box[2], s[:, 2]) - np.maximum(box[0], s[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], s[:, 3]) - np.maximum(box[1], s[:, 1]), 0, None)
    return float((iw * ih / ((s[:, 2] - s[:, 0]) * (s[:, 3] - s[:, 1]))).max())


def pick_negatives(frame: np.ndarray, signs: list, count: int, rng: np.random.Generator,
                   ranker: Ranker | None = None, pool: int = 256,
                   sign_map: SignMap | None = None) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` boxes with IoU < 0.1 to every sign and at most a quarter of any sign inside
    (:data:`MAX_SIGN_SHARE`): two thirds drawn from a wide pool of
    proposals (the regions the runtime will hand over, not only the most sign-like), one third
    random boxes of sign size; none overlapping another by IoU >= 0.5 (no near-copies). With a
    ``sign_map``, its boxes come first in the proposals' share: the sign-like places the map adds
    are the negatives a pipeline with the map meets most."""
    h, w = frame.shape[:2]
    props = [p.box for p in propose(frame, ProposalConfig(max_proposals=pool), ranker)]
    props = [props[i] for i in rng.permutation(len(props))]
    if sign_map is not None:
        props = [p.box for p in sign_map.propose(frame)] + props
    sides = rng.integers(16, 128, count)
    rand = [(int(x), int(y), int(x + s), int(y + s))
            for s, x, y in zip(sides, rng.integers(0, max(1, w - 128), count), rng.integers(0, max(1, h - 128), count))]
    n_props = min(len(props), count - count // 3)
    candidates = props[:n_props] + rand[: count - n_props] + props[n_props:]
    chosen: list[tuple[int, int, int, int]] = []
    for box in candidates:
        if len(chosen) == count:
            break
        if signs and (iou_matrix([box], signs).max() >= 0.1 or sign_share(box, signs) > MAX_SIGN_SHARE):
            continue
        if chosen and iou_matrix([box], chosen).max() >= 0.5:
            continue
        chosen.append(box)
    return chosen


def mine(frames_dirs: Sequence[Path], out: Path, *, subset: str = "all", per_frame: int = 150, margin: float = 0.1,
         seed: int = 0, progress: bool = True, ranker: Ranker | None = None, sign_maps: Sequence[Path] = ()) -> dict:
    """Write negative crops of the chosen frames of every folder to ``out``; return the manifest.

    With ``sign_maps``, each frame is mined with the first map that was not fitted on it (a map
    makes fewer and other false boxes on its own frames than on new ones: fit one map on the even
    frames and one on the odd, and each frame gets the boxes of the map that never saw it), or,
    where every map saw the frame, with the first map.

    Raises:
        ConfigError: a folder without frames in ``subset``, or two folders holding frames of one name.
    """
    chosen = []
    for folder in frames_dirs:
        files, gt = frame_files(folder)
        stems = select_frames(sorted(files), subset)
        if not stems:
            raise ConfigError(f"{folder}: no frames for --subset {subset}")
        chosen.append((Path(folder), files, gt, stems))
    names = [s for *_, stems in chosen for s in stems]
    if len(set(names)) < len(names):
        raise ConfigError(f"two --frames folders hold frames of the same name ({', '.join(map(str, frames_dirs))}); a crop is "
                          f"named by its frame, so mine them into separate --out folders")
    out = ensure_writable_dir(out)
    rng = np.random.default_rng(seed)
    maps = [SignMap(p) for p in sign_maps]
    crops: list[dict] = []
    for folder, files, gt, stems in chosen:
        seen = [frames_fitted(m.fitted_on, folder) for m in maps]
        for stem in tqdm(stems, desc=f"mining negatives in {folder.name}", unit="frame", disable=not progress, file=sys.stderr):
            frame = read_frame(files[stem], gt.get(stem, ()))
            h, w = frame.shape[:2]
            signs = [a.box for a in gt.get(stem, [])]
            unseen = [i for i, frames in enumerate(seen) if stem not in frames]
            pick = (unseen or [0])[0] if maps else None
            candidates = pick_negatives(frame, signs, per_frame, rng, ranker, sign_map=maps[pick] if pick is not None else None)
            for k, box in enumerate(candidates):
                x1, y1, x2, y2 = expand_box(box, margin, w, h)
                name = f"{stem}_{k:03d}.png"
                cv2.imwrite(str(out / name), frame[y1:y2, x1:x2])
                crops.append({"file": name, "frame": stem, "box": list(box), "sign_map": pick})
    manifest = {"fitted_on": [fitted_on(folder, stems) for folder, _, _, stems in chosen],
                "sources": [str(folder.resolve()) for folder, *_ in chosen], "subset": subset,
                "count": len(crops), "crops": crops, "margin": margin,
                "sign_maps": [str(Path(p).resolve()) for p in sign_maps],
                "note": "the frames of fitted_on trained the background class: do not score on them"}
    write_text_atomic(out / "negatives.json", json.dumps(manifest, indent=2))
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.frames.negatives", formatter_class=HelpFormatter,
        description="Mine not-a-sign crops from annotated road frames for a background class.",
        epilog="examples:\n  python -m train.frames.negatives --frames data/GTSDB/train --out runs/negatives\n"
               "  python -m train.frames.negatives --frames data/GTSDB/train --subset even --per-frame 150 --out runs/neg-even",
    )
    p.add_argument("--frames", type=Path, nargs="+", required=True, help="folders of frames + gt.txt")
    p.add_argument("--out", type=Path, default=Path("runs/negatives"), help="folder for the crops")
    p.add_argument("--subset", default="all", choices=("even", "odd", "all"),
                   help="which frames of each folder to mine (keep the others to evaluate on)")
    p.add_argument("--per-frame", type=int, default=150, help="crops per frame at most")
    p.add_argument("--seed", type=int, default=0, help="which random boxes are drawn")
    p.add_argument("--ranker", type=Path, default=None,
                   help="proposal ranker JSON (python -m train.frames.ranker --out); default: the runtime's own")
    p.add_argument("--sign-map", type=Path, nargs="+", default=[], metavar="MAP",
                   help="learned proposal sources (python -m train.frames.sign_map): their sign-free boxes are mined first, "
                        "each frame with the first map not fitted on it (crops' \"sign_map\": its index)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_errors("python -m train.frames.negatives")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ranker = Ranker.load(args.ranker) if args.ranker else None
    m = mine(args.frames, args.out, subset=args.subset, per_frame=args.per_frame, seed=args.seed, progress=not args.quiet,
             ranker=ranker, sign_maps=args.sign_map)
    frames = sum(len(f["frames"]) for f in m["fitted_on"])
    print(f"{m['count']} negative crops from {frames} frames -> {args.out} (train with --background {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
