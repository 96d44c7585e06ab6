"""Which annotated signs the frame pipeline misses, and at which stage.

Every sign of a GTSDB-layout folder gets one reason, the first that applies:

* ``hit``: a detection of the right class at IoU >= ``--iou``;
* ``misread``: a detection at IoU >= ``--iou`` that names another class;
* ``unconfirmed``: a detection of the right class at IoU >= ``--iou`` that the pipeline's second look
  dropped (fewer than 2 of its re-crops read its class: ``runtime.pipeline.SECOND_LOOK_SCALES``);
* ``rejected``: a proposal at IoU >= ``--iou`` that the classifier called background or unknown
  (or that a surer overlapping detection suppressed);
* ``loose``: the right class, but the detection's box is off (IoU in [``--near``, ``--iou``)): what
  box refinement could win;
* ``cut``: a candidate at IoU >= ``--iou`` existed, but ranking, NMS, the cap on proposals or the profile's
  budget (``--profile``: e.g. ``pi`` reads the map's 5 best boxes and no colour proposal) dropped it;
* ``near``: no candidate at IoU >= ``--iou``, the best one at IoU >= ``--near`` (a grow factor off);
* ``none``: no candidate near the sign: no cue sees it.

With ``--build`` every false detection (one that is no hit) gets a kind too, by the sign it overlaps most:

* ``misread``: it covers a sign (IoU >= ``--near``) and names another class;
* ``double``: the right class at IoU >= ``--near``, but another detection already hit that sign;
* ``loose``: the right class, IoU in [``--near``, ``--iou``), and no detection hit the sign;
* ``part``: it overlaps a sign, less than ``--near`` (a part of it, or its surroundings);
* ``background``: it touches no sign.

They are counted by the cue that proposed the box (a colour cue, or ``map``).

``--build`` may be a bundle (``python -m export.bundle``): its own ranker, sign map and profile are diagnosed.

Without ``--build`` only the proposal stage is diagnosed: ``proposed`` (a proposal at IoU >= ``--iou``),
``cut``, ``near``, ``none``. Counts come by class and by size. A folder whose frames fitted the build's
background class or the ranker gets a note: such a count diagnoses a fit, it does not score it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.gtsdb import frames_that_trained, load_frames, parts_of
from bench.matching import match_pairs
from runtime.annotations import GTSRB_CLASS_NAMES, Annotation, select_frames
from runtime.builds import read_metadata
from runtime.classifier import Classifier, Detection
from runtime.cli import HelpFormatter
from runtime.errors import cli_errors
from runtime.pipeline import PROFILES, UNLIMITED, Budget, FramePipeline
from runtime.proposals import ProposalConfig, Ranker, candidates, default_ranker, propose
from runtime.roi import iou_matrix
from runtime.sign_map import SignMap

STAGES = ("hit", "misread", "unconfirmed", "rejected", "loose", "cut", "near", "none")
FALSE_KINDS = ("misread", "double", "loose", "part", "background")
PROPOSAL_STAGES = ("proposed", "cut", "near", "none")
SIZE_EDGES = (0, 20, 30, 45, 70)  # sign side in pixels: the lower edge of each size bin


@dataclass(frozen=True)
class SignFate:
    frame: str
    class_id: int
    side: float  # the larger side of the annotated box, in frame pixels
    reason: str  # one of STAGES (with a build) or PROPOSAL_STAGES (without)
    best_iou: float  # the best IoU any candidate reached


@dataclass(frozen=True)
class FalseDetection:
    frame: str
    class_id: int  # what the classifier said
    cue: str  # the proposal's cue ("red-hole", ..., "map")
    score: float  # the classifier's score
    kind: str  # one of FALSE_KINDS


def false_detections(stem: str, dets: Sequence[Detection], truth: list[Annotation], iou: float,
                     near: float) -> list[FalseDetection]:
    """Every detection of one frame that is not a hit, with its kind (see the module docstring)."""
    boxes, classes = [d.box for d in dets], [d.prediction.class_id for d in dets]
    gt_boxes, gt_classes = [a.box for a in truth], [a.class_id for a in truth]
    pairs = match_pairs(boxes, classes, gt_boxes, gt_classes, iou)
    hit_dets, hit_signs = {d for _, d in pairs}, {t for t, _ in pairs}
    ious = iou_matrix(boxes, gt_boxes) if boxes and gt_boxes else np.zeros((len(boxes), 0))
    out = []
    for i, d in enumerate(dets):
        if i in hit_dets:
            continue
        t = int(np.argmax(ious[i])) if ious.shape[1] else -1
        overlap = float(ious[i, t]) if t >= 0 else 0.0
        if overlap >= near and classes[i] != gt_classes[t]:
            kind = "misread"
        elif overlap >= near:
            kind = "double" if t in hit_signs else "loose"
        else:
            kind = "part" if overlap > 0 else "background"
        cue = d.proposal.cue if d.proposal is not None else "given"
        out.append(FalseDetection(stem, classes[i], cue, float(d.prediction.score), kind))
    return out


def _best(truth: list[Annotation], boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Each sign's best IoU with ``boxes`` (0 where there are none)."""
    if not truth or len(boxes) == 0:
        return np.zeros(len(truth))
    return iou_matrix([a.box for a in truth], boxes).max(axis=1)


def frame_fates(stem: str, frame: np.ndarray, truth: list[Annotation], cfg: ProposalConfig, ranker: Ranker,
                pipe: FramePipeline | None, iou: float, near: float, sign_map: SignMap | None = None,
                false: list[FalseDetection] | None = None) -> list[SignFate]:
    """The reason of every sign of one frame (see the module docstring); the sign map's boxes count as candidates.

    With ``pipe``, the frame's false detections are appended to ``false`` if given."""
    learned = [p.box for p in sign_map.propose(frame)] if sign_map is not None else []
    if sign_map is not None and sign_map.band is not None:  # its band's boxes too, as the pipeline reads them
        learned += [p.box for p in sign_map.band.propose(frame)]
    cand = _best(truth, [*(tuple(b) for b in candidates(frame, cfg).boxes), *learned])
    if pipe is None:
        proposed = _best(truth, [p.box for p in propose(frame, cfg, ranker)] + learned)
        detected: dict[int, str] = {}
    else:
        result = pipe.run(frame)
        proposed = _best(truth, [d.box for d in result.classified if d is not None])
        dets = list(result.detections)
        boxes, classes = [d.box for d in dets], [d.prediction.class_id for d in dets]
        gt_boxes, gt_classes = [a.box for a in truth], [a.class_id for a in truth]
        detected = {t: "hit" for t, _ in match_pairs(boxes, classes, gt_boxes, gt_classes, iou)}
        for t, _ in match_pairs(boxes, classes, gt_boxes, gt_classes, iou, need_class=False):
            detected.setdefault(t, "misread")
        dropped = result.unconfirmed
        for t, _ in match_pairs([d.box for d in dropped], [d.prediction.class_id for d in dropped], gt_boxes, gt_classes, iou):
            detected.setdefault(t, "unconfirmed")
        for t, _ in match_pairs(boxes, classes, gt_boxes, gt_classes, near):
            detected.setdefault(t, "loose")
        if false is not None:
            false.extend(false_detections(stem, dets, truth, iou, near))
    fates = []
    for i, a in enumerate(truth):
        if i in detected and (detected[i] != "loose" or proposed[i] < iou):
            reason = detected[i]
        elif proposed[i] >= iou:
            reason = "proposed" if pipe is None else "rejected"
        elif cand[i] >= iou:
            reason = "cut"
        else:
            reason = "near" if cand[i] >= near else "none"
        x1, y1, x2, y2 = a.box
        fates.append(SignFate(stem, a.class_id, float(max(x2 - x1, y2 - y1)), reason, float(cand[i])))
    return fates


SIZE_NAMES = tuple(f"{lo}-{hi} px" for lo, hi in itertools.pairwise(SIZE_EDGES)) + (f">= {SIZE_EDGES[-1]} px",)


def size_bin(side: float) -> str:
    """The name of the size bin (SIZE_NAMES) a sign of this side falls in."""
    return SIZE_NAMES[max(int(np.searchsorted(SIZE_EDGES, side, side="right")) - 1, 0)]


def tabulate(fates: Sequence[SignFate], stages: Sequence[str], key: Callable[[SignFate], str],
             names: dict[str, str] | None = None, order: Sequence[str] | None = None) -> str:
    """A markdown table: one row per group (``key(fate)``), the count of each reason, the share found.

    Rows come in ``order`` (groups not in it are left out), else the most missed first."""
    groups: dict[str, Counter] = {}
    for f in fates:
        groups.setdefault(key(f), Counter())[f.reason] += 1
    found = stages[0]
    head = "| group | signs | " + " | ".join(stages) + f" | {found} share |"
    lines = [head, "|" + "---|" * (len(stages) + 3)]
    if order is None:
        order = sorted(groups, key=lambda g: (groups[g][found] - sum(groups[g].values()), g))
    for g in (g for g in order if g in groups):
        c = groups[g]
        n = sum(c.values())
        label = names.get(g, g) if names else g
        lines.append(f"| {label} | {n} | " + " | ".join(str(c[s]) for s in stages) + f" | {c[found] / n:.3f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.misses", formatter_class=HelpFormatter,
        description="Which annotated signs the frame pipeline misses, and at which stage.\n\n(No candidate, a candidate "
                    "the ranking cut, rejected, unconfirmed by the second look, misread, a loose box), by class and by size; with --build, also what "
                    "its false detections are (misread, double, loose, part of a sign, background), by cue.)",
        epilog="examples:\n  python -m bench.misses --frames data/GTSDB/gtsdb-train\n"
               "  python -m bench.misses --frames data/GTSDB/gtsdb-train --build runs/bg-train/model_int8.tflite\n"
               "  python -m bench.misses --frames gtsdb/ --ranker ranker.json --json > fates.json\n"
               "  python -m bench.misses --frames gtsdb/ --build runs/quickstart/bundle --profile pi",
    )
    p.add_argument("--frames", type=Path, required=True, help="folder of frames + gt.txt (image;left;top;right;bottom;ClassId)")
    p.add_argument("--build", type=Path, default=None,
                   help=".tflite/.onnx build with metadata, or a bundle (python -m export.bundle) with its own ranker and sign "
                        "map: diagnose detections too (default: the proposal stage only)")
    p.add_argument("--profile", default=None, choices=list(PROFILES),
                   help="with --build, the budget a frame the pipeline reads at (runtime.pipeline.PROFILES; default: a "
                        "bundle's own, else full): signs its budget leaves unread count as cut")
    p.add_argument("--ranker", type=Path, default=None,
                   help="proposal ranker JSON (python -m train.frames.ranker --out); default: the runtime's own")
    p.add_argument("--sign-map", type=Path, default=None,
                   help="a learned proposal source (python -m train.frames.sign_map): its boxes join the candidates and proposals")
    p.add_argument("--subset", default="all", choices=("all", "even", "odd"), help="only these frames (by number)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU needed for a hit")
    p.add_argument("--near", type=float, default=0.3, help="IoU from which a box counts as near the sign (loose, near)")
    p.add_argument("--json", action="store_true", help="print every sign's fate as JSON instead of the tables")
    return p


@dataclass(frozen=True)
class Diagnosis:
    fates: list[SignFate]
    class_names: list[str]
    frames: int  # frames looked at, with signs or without
    fitted: set[str]  # those of them that fitted the build's background class or the ranker
    false: list[FalseDetection] = field(default_factory=list)  # with a build: every detection that is no hit


def diagnose(data: Path, *, build: Path | None = None, ranker: Ranker | None = None, subset: str = "all",
             iou: float = 0.5, near: float = 0.3, sign_map: Path | None = None, budget: Budget = UNLIMITED) -> Diagnosis:
    """Every sign's fate in the chosen frames of ``data`` (see the module docstring); with ``build``, its pipeline reads
    what ``budget`` allows."""
    ranker = ranker or default_ranker()
    meta = read_metadata(build) if build is not None else None
    if meta is not None:
        names = list(meta["class_names"])
        num = len(names) - (meta.get("background_class") is not None)
    else:
        names, num = list(GTSRB_CLASS_NAMES), None
    frames, gt = load_frames(data, num)
    keep = set(select_frames([stem for stem, _ in frames], subset))
    learned = SignMap(sign_map) if sign_map is not None else None
    pipe = (FramePipeline(Classifier.from_build(build, threads=2), ranker=ranker, sign_map=learned, budget=budget)
            if build is not None else None)
    cfg = pipe.proposals if pipe is not None else ProposalConfig()
    false: list[FalseDetection] = []
    fates = [f for stem, frame in frames if stem in keep
             for f in frame_fates(stem, frame, gt.get(stem, []), cfg, ranker, pipe, iou, near, learned, false)]
    return Diagnosis(fates, names, len(keep), frames_that_trained(meta or {}, data, ranker, learned) & keep, false)


def false_table(false: Sequence[FalseDetection]) -> str:
    """A markdown table of false detections: one row per cue (most first) and one for all, a column per kind."""
    by_cue: dict[str, Counter] = {}
    for f in false:
        by_cue.setdefault(f.cue, Counter())[f.kind] += 1
    total = sum(by_cue.values(), Counter())
    lines = ["| cue | false detections | " + " | ".join(FALSE_KINDS) + " |", "|" + "---|" * (len(FALSE_KINDS) + 2)]
    for cue, c in [*sorted(by_cue.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])), ("all", total)]:
        lines.append(f"| {cue} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in FALSE_KINDS) + " |")
    return "\n".join(lines)


@cli_errors("python -m bench.misses")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.near <= args.iou <= 1:
        parser.error(f"need 0 < --near ({args.near}) <= --iou ({args.iou}) <= 1")
    if args.profile and args.build is None:
        parser.error("--profile sets the budget of a build's pipeline: give --build too")
    build, sign_map, budget = args.build, args.sign_map, UNLIMITED
    if args.build is not None:  # a build's parts as bench.gtsdb reads them (a bundle: its own)
        parts = parts_of(args.build, ranker=args.ranker, sign_map=args.sign_map, profile=args.profile)
        build, ranker, sign_map, budget = parts.build, parts.ranker, parts.sign_map, parts.budget
    else:
        ranker = Ranker.load(args.ranker) if args.ranker else None
    d = diagnose(args.frames, build=build, ranker=ranker, subset=args.subset, iou=args.iou, near=args.near,
                 sign_map=sign_map, budget=budget)
    fates = d.fates
    if args.json:
        print(json.dumps([f.__dict__ for f in fates], indent=1))
        return 0
    stages = STAGES if args.build is not None else PROPOSAL_STAGES
    what = "the proposal stage"
    if args.build is not None:
        what = f"{args.build}" + (f" (--profile {args.profile})" if args.profile else "")
    print(f"{what} on {d.frames} frames of {args.frames} ({len(fates)} signs), "
          f"IoU {args.iou}, near {args.near}")
    if d.fitted:
        print(f"note: {len(d.fitted)} of these frames fitted the build's background class, the ranker or the sign map; "
              "this diagnoses a fit, it does not score one")
    print(tabulate(fates, stages, lambda f: "all"))
    print()
    class_names = {str(i): f"{i} {n}" for i, n in enumerate(d.class_names)}
    print(tabulate(fates, stages, lambda f: str(f.class_id), class_names))
    print()
    print(tabulate(fates, stages, lambda f: size_bin(f.side), order=SIZE_NAMES))
    if args.build is not None:
        print()
        print(f"{len(d.false)} false detections, by the cue that proposed them:")
        print(false_table(d.false))
    return 0


if __name__ == "__main__":
    sys.exit(main())
