"""Run the whole frame pipeline over GTSDB-layout frames and score it.

    python -m bench.gtsdb --build runs/quickstart/model_int8.tflite --frames data/GTSDB/gtsdb
    python -m bench.gtsdb --build model_int8.onnx --frames gtsdb/ --proposals gt --threads 2 --json

Prints proposal recall at IoU >= 0.5, end-to-end precision / recall / F1 (a hit needs IoU >= 0.5 and
the right class), per-stage milliseconds per frame (proposals, crop+preprocess, invoke, post, second
look) for each thread count, and with ground-truth boxes as proposals the classification-only accuracy on
real camera crops. Every frame goes through ``runtime.pipeline.FramePipeline.run``, the code users
call, and its own stage times are what is reported. Frame decoding is not timed: a camera hands
frames over decoded. ``--overlap`` also runs the camera demo's way of using two cores
(``runtime.pipeline.ProposalsAhead``: the next frame's proposals on their own thread while this
frame is classified, the classifier on half the ``--threads`` and OpenCV on all of them, as the demo
splits the cores); its "total" is then the wall time from one frame's result to the next.
Each setting runs ``--repeat`` times and the fastest pass is reported; the scores are the same
every pass. ``--no-second-look`` scores the pipeline without its second look at each detection
(``runtime.pipeline.SECOND_LOOK_SCALES``), to see what it wins and costs.

Frames that fitted the proposal ranker (``--ranker``, default the runtime's own), the learned
sign map (``--sign-map``) or mined the build's background class are left out: a frame that trained
the pipeline cannot test it. To score every frame, give two builds (and their rankers) trained on
complementary halves: each is scored on the frames it did not train on, and the two are pooled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from bench.ap import SIZES, SUPERCLASSES, Scored, mean_ap
from bench.matching import match_pairs
from runtime.annotations import Annotation, frame_files, frames_fitted, read_frame, select_frames
from runtime.builds import read_metadata
from runtime.bundle import Bundle, is_bundle
from runtime.classifier import Classifier, Prediction
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.machine import describe_cpu
from runtime.pipeline import PROFILES, UNLIMITED, Budget, FrameCost, FramePipeline, FrameResult, split_cores
from runtime.proposals import Ranker, default_ranker
from runtime.roi import Box, iou_matrix, nms
from runtime.sign_map import SignMap
from runtime.stream import Frame, FrameStream, StreamOptions


@dataclass
class PipelineScore:
    proposals: str
    threads: int
    frames: int
    signs: int
    proposals_per_frame: float
    proposal_recall: float
    precision: float
    recall: float
    f1: float
    top1_accuracy: float | None  # ground-truth boxes only: argmax class, threshold ignored
    true_positives: int  # the counts behind the ratios, to pool runs over other frames (see pool)
    detections: int
    signs_proposed: int = 0
    top1_right: int = 0
    ms: dict[str, float] = field(default_factory=dict)  # median per frame, per stage
    build: str = ""
    threshold: float = 0.0  # the build's unknown threshold (or --threshold)
    overlap: bool = False  # proposals of the next frame ran while this one was classified (ProposalsAhead)
    second_look: bool = True  # each detection was checked again (FramePipeline.look_again)
    cost: dict[str, float] = field(default_factory=dict)  # a frame's mean cost (mean_cost)
    ap: dict[str, float | None] = field(default_factory=dict)  # detection-ranked AP (bench.ap.mean_ap); built-in proposals
    ranked: list[Scored] = field(default_factory=list, repr=False)  # what the AP ranks (to pool runs); not in --json
    truth: dict[str, list[tuple[Box, int]]] = field(default_factory=dict, repr=False)  # the signs it ranks against

    @property
    def fps(self) -> float:
        return 1000.0 / max(self.ms.get("total", 0.0), 1e-9)


def frames_that_trained(meta: dict, folder: Path, ranker: Ranker | None, sign_map: SignMap | None = None) -> set[str]:
    """Frames of ``folder`` that trained the build's background class, ``ranker`` (None: no proposals scored) or ``sign_map``.

    Frame sets are told apart by the SHA-256 of their gt.txt; a build whose background frames carry no checksum is
    matched by frame name alone (the careful side: it may leave out frames it need not)."""
    records = list(meta.get("background_fitted_on") or [])
    if "background_frames" in meta:  # one folder, recorded as its stems and one checksum
        records.append({"gt_sha256": meta.get("background_frames_gt_sha256"), "frames": meta["background_frames"]})
    trained = {s for r in records if r.get("gt_sha256") is None for s in r.get("frames") or ()}
    trained |= frames_fitted(records, folder)
    if ranker is not None:
        trained |= frames_fitted(ranker.fitted_on, folder)
    if sign_map is not None:
        trained |= frames_fitted(sign_map.fitted_on, folder)
    return trained


def load_frames(folder: Path, num_classes: int | None = None) -> tuple[list[tuple[str, np.ndarray]], dict[str, list[Annotation]]]:
    """Every frame of a GTSDB-layout folder, decoded, and its checked annotations (class ids below ``num_classes``)."""
    files, gt = frame_files(folder, num_classes)
    return [(stem, read_frame(path, gt.get(stem, ()))) for stem, path in files.items()], gt


def match(dets: list[tuple[Box, Prediction]], truth: list[Annotation], iou: float) -> int:
    """True positives: greedy one-to-one matching by IoU, each needing the right class."""
    return len(match_pairs([b for b, _ in dets], [p.class_id for _, p in dets], [a.box for a in truth],
                           [a.class_id for a in truth], iou))


def _results(pipe: FramePipeline, frames: list[tuple[str, np.ndarray]], gt: dict[str, list[Annotation]], proposals: str,
             overlap: bool) -> Iterator[tuple[str, FrameResult, float]]:
    """Each frame's result and the milliseconds it took: the built-in proposals through the runtime's frame stream (as
    the camera demo runs them), the "gt" boxes classified as given."""
    if proposals == "gt":
        for stem, frame in frames:
            result = pipe.run(frame, [a.box for a in gt.get(stem, [])])
            yield stem, result, result.ms.total
        return
    stream = FrameStream(pipe, StreamOptions(overlap=overlap))
    last = time.perf_counter()
    for out in stream.run(Frame(image, index=i, name=stem) for i, (stem, image) in enumerate(frames)):
        now = time.perf_counter()
        yield out.frame.name, out.result, 1000.0 * (now - last) if overlap else out.result.ms.total
        last = now


def score_pipeline(pipe: FramePipeline, frames: list[tuple[str, np.ndarray]], gt: dict[str, list[Annotation]],
                   proposals: str, iou: float = 0.5, overlap: bool = False) -> PipelineScore:
    """One pass of the pipeline over the frames: "builtin" proposals, or the "gt" boxes classified as given.

    ``overlap`` (builtin proposals only): each frame's proposals start on ProposalsAhead's thread while the
    frame before is classified, as in the camera demo; "total" is then the wall time between two results."""
    overlap = overlap and proposals == "builtin"
    tp = n_det = n_gt = covered = n_props = top1_right = 0
    stages: dict[str, list[float]] = {}
    costs: list[FrameCost] = []
    ranked: list[Scored] = []
    for stem, result, total in _results(pipe, frames, gt, proposals, overlap):
        truth = gt.get(stem, [])
        ranked += ranked_reads(stem, result, pipe.classifier.background_class, pipe.overlap_iou)
        for k, v in {**result.ms.to_dict(), "total": total}.items():
            stages.setdefault(k, []).append(v)
        costs.append(result.cost)
        dets = [(d.box, d.prediction) for d in result.detections]
        tp += match(dets, truth, iou)
        n_det += len(dets)
        n_gt += len(truth)
        kept = [d.box for d in result.classified if d is not None]
        n_props += len(kept)
        if truth and kept:
            covered += int((iou_matrix([a.box for a in truth], kept).max(axis=1) >= iou).sum())
        if proposals == "gt":  # classified[i] is the i-th annotation's box (None if it had no area in the frame)
            top1_right += sum(d is not None and d.prediction.top_k[0][0] == a.class_id
                              for d, a in zip(result.classified, truth))
    clf = pipe.classifier
    score = _score(proposals, clf.threads, len(frames), n_gt, n_props, covered, tp, n_det, top1_right,
                   {k: float(np.median(v)) for k, v in stages.items()}, str(clf.path), clf.threshold)
    signs = _truth(frames, gt)
    ap = mean_ap(ranked, signs) if proposals == "builtin" else {}
    return replace(score, overlap=overlap, second_look=pipe.second_look, cost=mean_cost(costs), ap=ap, ranked=ranked,
                   truth=signs)


def _truth(frames: list[tuple[str, np.ndarray]], gt: dict[str, list[Annotation]]) -> dict[str, list[tuple[Box, int]]]:
    return {stem: [(a.box, a.class_id) for a in gt.get(stem, [])] for stem, _ in frames}


def ranked_reads(stem: str, result: FrameResult, background: int | None, overlap_iou: float) -> list[Scored]:
    """What the AP ranks of one frame: every box read as a sign (its top class, whatever its score), the reads of one
    sign merged as the pipeline merges them (NMS at ``overlap_iou``), less those the second look dropped."""
    dropped = {tuple(d.box) for d in result.unconfirmed}
    reads = [Scored(stem, d.box, d.prediction.top_k[0][0], d.prediction.top_k[0][2]) for d in result.classified
             if d is not None and d.prediction.top_k[0][0] != background and tuple(d.box) not in dropped]
    keep = nms([r.box for r in reads], [r.score for r in reads], overlap_iou)
    return [reads[i] for i in keep]


def mean_cost(costs: Sequence[FrameCost]) -> dict[str, float]:
    """A frame's cost averaged over frames: crops, second-look crops, G MACs (the sign map's among them)."""
    n = max(len(costs), 1)
    return {"crops": sum(c.crops for c in costs) / n, "second_look_crops": sum(c.second_look_crops for c in costs) / n,
            "gmacs": sum(c.macs for c in costs) / n / 1e9, "map_gmacs": sum(c.map_macs for c in costs) / n / 1e9,
            "macs_known": float(all(c.macs_per_crop > 0 for c in costs))}


def _score(proposals: str, threads: int, frames: int, signs: int, props: int, covered: int, tp: int, dets: int,
           top1_right: int, ms: dict[str, float], build: str, threshold: float = 0.0) -> PipelineScore:
    precision = tp / dets if dets else 0.0
    recall = tp / signs if signs else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PipelineScore(proposals, threads, frames, signs, props / max(frames, 1), covered / signs if signs else 0.0,
                         precision, recall, f1, top1_right / signs if proposals == "gt" and signs else None, tp, dets,
                         covered, top1_right, ms, build, threshold)


def pool(scores: Sequence[PipelineScore]) -> PipelineScore:
    """One score over the frames of several runs (e.g. two folds, each build on the frames it did not train on).

    The counts add up; the milliseconds are the runs' per-frame medians averaged by frame count."""
    n = sum(s.frames for s in scores)
    ms = {k: sum(s.ms[k] * s.frames for s in scores) / max(n, 1) for k in scores[0].ms}
    pooled = _score(scores[0].proposals, scores[0].threads, n, sum(s.signs for s in scores),
                    round(sum(s.proposals_per_frame * s.frames for s in scores)), sum(s.signs_proposed for s in scores),
                    sum(s.true_positives for s in scores), sum(s.detections for s in scores),
                    sum(s.top1_right for s in scores), ms, "pooled")
    cost = {k: sum(s.cost.get(k, 0.0) * s.frames for s in scores) / max(n, 1) for k in scores[0].cost}
    ranked = [r for s in scores for r in s.ranked]
    truth = {k: v for s in scores for k, v in s.truth.items()}
    ap = mean_ap(ranked, truth) if scores[0].ap else {}
    return replace(pooled, overlap=scores[0].overlap, second_look=scores[0].second_look, cost=cost, ap=ap, ranked=ranked,
                   truth=truth)


def format_scores(scores: list[PipelineScore]) -> str:
    lines = [(f"{'proposals':<13} {'thr':>3} {'props/fr':>8} {'crops/fr':>8} {'GMAC/fr':>7} {'prop rec':>8} {'prec':>6} "
              f"{'recall':>6} {'F1':>6} {'top1':>6} {'ms prop':>7} {'ms crop':>7} {'ms inv':>7} {'ms post':>7} {'ms 2nd':>7} "
              f"{'ms tot':>7} {'fps':>6}")]
    for s in scores:
        top1 = f"{s.top1_accuracy:6.3f}" if s.top1_accuracy is not None else f"{'-':>6}"
        kind = s.proposals + ("+ahead" if s.overlap else "")
        crops = s.cost.get("crops", 0.0) + s.cost.get("second_look_crops", 0.0)
        gmacs = f"{s.cost['gmacs']:7.3f}" if s.cost.get("macs_known") else f"{'-':>7}"
        lines.append(f"{kind:<13} {s.threads:>3} {s.proposals_per_frame:8.1f} {crops:8.1f} {gmacs} {s.proposal_recall:8.3f} "
                     f"{s.precision:6.3f} {s.recall:6.3f} {s.f1:6.3f} {top1} {s.ms['proposals']:7.2f} "
                     f"{s.ms['crop+preprocess']:7.2f} {s.ms['invoke']:7.2f} {s.ms['post']:7.2f} {s.ms['second look']:7.2f} "
                     f"{s.ms['total']:7.2f} {s.fps:6.1f}")
    return "\n".join(lines)


def format_ap(s: PipelineScore) -> str:
    """The AP figures of one built-in setting (bench.ap): 43-class mAP, superclass APs overall and by size."""
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    ap = s.ap
    parts = [f"43-class mAP@0.5 {f(ap.get('map_43'))}", f"superclass mAP {f(ap.get('superclass_map'))}"]
    parts += [f"{n} {f(ap.get(n))}" for n in SUPERCLASSES]
    parts += [f"{size} {f(ap.get(f'superclass_map_{size}'))}" for size in SIZES]
    return "detection-ranked AP: " + ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.gtsdb", formatter_class=HelpFormatter,
        description="Score the frame pipeline (proposals -> crops -> build) on GTSDB-layout frames.",
        epilog="examples:\n  python -m bench.gtsdb --build runs/quickstart/model_int8.tflite --frames data/GTSDB/gtsdb\n"
               "  python -m bench.gtsdb --build model_int8.onnx --frames gtsdb/ --proposals gt --threads 2 --json\n"
               "  python -m bench.gtsdb --build runs/quickstart/model_int8.tflite runs/quickstart-odd/model_int8.tflite "
               "--ranker runtime/proposal_ranker.json ranker_odd.json --frames gtsdb/",
    )
    p.add_argument("--build", type=Path, nargs="+", required=True,
                   help=".tflite/.onnx build(s) with metadata, or bundles (python -m export.bundle); several (e.g. the two "
                        "folds) are also pooled")
    p.add_argument("--frames", type=Path, required=True, help="folder of frames + gt.txt (image;left;top;right;bottom;ClassId)")
    p.add_argument("--proposals", nargs="+", choices=("builtin", "gt"), default=["builtin", "gt"],
                   help="where ROIs come from: the built-in colour proposals, or the ground-truth boxes")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="inference threads to measure")
    p.add_argument("--subset", default="all", choices=("all", "even", "odd"),
                   help="score only these frames (by number), e.g. to compare builds on the same held-out frames")
    p.add_argument("--repeat", type=int, default=3,
                   help="passes over the frames per setting; the fastest is reported (other load only ever adds time)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU needed for a hit")
    p.add_argument("--threshold", type=float, default=None, help="override the build's unknown threshold")
    p.add_argument("--ranker", type=Path, nargs="+", default=None,
                   help="proposal ranker JSON (python -m train.frames.ranker --out), one for all builds or one per build; "
                        "default: the runtime's own")
    p.add_argument("--overlap", action="store_true",
                   help="also time the built-in proposals as the camera demo runs them: the next frame's on a thread of "
                        "their own while this one is classified, the classifier on half of each --threads count and OpenCV on all of "
                        "it (row builtin+ahead; ms tot: wall time per frame)")
    p.add_argument("--sign-map", type=Path, default=None,
                   help="a learned proposal source (python -m train.frames.sign_map) beside the colour cues; frames that fitted it "
                        "are left out")
    p.add_argument("--no-second-look", action="store_true",
                   help="keep every detection as the first invoke reads it, without cropping it again at 0.9, 1.15 and "
                        "1.3 times its box and keeping it when 2 of the 3 agree (what the pipeline does by default)")
    p.add_argument("--profile", default=None, choices=list(PROFILES),
                   help="the budget a frame (runtime.pipeline.PROFILES; default: a bundle's own, else full): "
                        + "; ".join(f"{k}: {v.why}" for k, v in PROFILES.items()))
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    return p


def score_build(build: Path, frames: list[tuple[str, np.ndarray]], gt: dict[str, list[Annotation]], data: Path, *,
                ranker: Ranker | None, threads: Sequence[int] = (1, 2), proposals: Sequence[str] = ("builtin", "gt"),
                repeat: int = 3, iou: float = 0.5, threshold: float | None = None, overlap: bool = False,
                sign_map: Path | None = None, second_look: bool = True, budget: Budget = UNLIMITED) -> list[PipelineScore]:
    """Every (threads, proposals) setting of one build, on the frames of ``data`` that trained neither it nor its ranker.

    Each setting runs ``repeat`` times; the fastest pass is kept (the scores are the same every pass).
    ``overlap`` adds the built-in proposals run ahead on their own thread (``score_pipeline``) as one more setting.
    """
    learned = SignMap(sign_map) if sign_map is not None else None
    trained_on = frames_that_trained(read_metadata(build), data, ranker, learned)
    left = [(stem, f) for stem, f in frames if stem not in trained_on]
    if len(left) < len(frames):
        print(f"{build}: leaving out {len(frames) - len(left)} frames that trained its background class or the "
              f"proposal ranker or sign map; scoring {len(left)}", file=sys.stderr)
    if not left:
        raise ConfigError(f"every chosen frame of {data} trained the background class of {build} or the proposal "
                          "ranker or sign map; score other frames (--frames odd) or refit (python -m train.frames.ranker)")
    scores = []
    for n in threads:
        pipe = FramePipeline(Classifier.from_build(build, threads=n, threshold=threshold), ranker=ranker, sign_map=learned,
                             second_look=second_look, budget=budget)
        for kind in proposals:
            runs = [score_pipeline(pipe, left, gt, kind, iou) for _ in range(repeat)]
            scores.append(min(runs, key=lambda s: s.ms["total"]))
        if overlap and "builtin" in proposals:
            scores.append(_score_ahead(build, left, gt, n, ranker=ranker, sign_map=learned, repeat=repeat, iou=iou,
                                       threshold=threshold, second_look=second_look, budget=budget))
    return scores


def _score_ahead(build: Path, frames: list[tuple[str, np.ndarray]], gt: dict[str, list[Annotation]], cores: int, *,
                 ranker: Ranker | None, sign_map: SignMap | None, repeat: int, iou: float,
                 threshold: float | None, second_look: bool = True, budget: Budget = UNLIMITED) -> PipelineScore:
    """The overlapped setting on ``cores`` cores, split between the stages as the camera demo splits them
    (``split_cores``: the classifier half the cores, OpenCV all of them); the row's thread count is ``cores``."""
    clf_threads, cv_threads = split_cores(cores)
    pipe = FramePipeline(Classifier.from_build(build, threads=clf_threads, threshold=threshold), ranker=ranker,
                         sign_map=sign_map, second_look=second_look, budget=budget)
    before = cv2.getNumThreads()
    cv2.setNumThreads(cv_threads)
    try:
        runs = [score_pipeline(pipe, frames, gt, "builtin", iou, overlap=True) for _ in range(repeat)]
    finally:
        cv2.setNumThreads(before)
    return replace(min(runs, key=lambda s: s.ms["total"]), threads=cores)


@dataclass(frozen=True)
class Parts:
    """What one --build scores with: the classifier build, the ranker, the sign map and the budget a frame."""

    build: Path
    ranker: Ranker | None
    sign_map: Path | None
    budget: Budget


def parts_of(build: Path, *, ranker: Path | None = None, sign_map: Path | None = None, profile: str | None = None) -> Parts:
    """A build and the parts given beside it (default ranker: the runtime's own; default profile: full), or a bundle
    (runtime.bundle), which carries its own ranker, map and profile (``profile`` overrides the bundle's).

    Raises:
        ConfigError: a bundle with a ranker or sign map given beside it.
    """
    if is_bundle(build):
        if ranker or sign_map:
            raise ConfigError(f"--build {build} is a bundle: it carries its own ranker and sign map; leave out --ranker and "
                              f"--sign-map")
        bundle = Bundle.open(build)
        ranker_file, classifier = bundle.part("ranker"), bundle.part("classifier")
        assert classifier is not None  # Bundle.open checked it
        chosen = PROFILES[profile] if profile else bundle.profile
        return Parts(classifier, Ranker.load(ranker_file) if ranker_file else default_ranker(), bundle.part("sign_map"),
                     chosen.budget)
    return Parts(build, Ranker.load(ranker) if ranker else default_ranker(), sign_map, PROFILES[profile or "full"].budget)


@cli_errors("python -m bench.gtsdb")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.ranker and len(args.ranker) not in (1, len(args.build)):
        parser.error(f"give one --ranker for all builds or one per --build ({len(args.build)})")
    rankers = args.ranker or [None]
    rankers = rankers * len(args.build) if len(rankers) == 1 else rankers  # one for all builds, or one each
    parts = [parts_of(b, ranker=r, sign_map=args.sign_map, profile=args.profile) for b, r in zip(args.build, rankers)]
    metas = [read_metadata(p.build) for p in parts]
    sign_classes = min(len(m["class_names"]) - (m.get("background_class") is not None) for m in metas)
    frames, gt = load_frames(args.frames, sign_classes)
    keep = set(select_frames([stem for stem, _ in frames], args.subset))
    frames = [(stem, f) for stem, f in frames if stem in keep]
    if "builtin" not in args.proposals:
        parts = [replace(p, ranker=None) for p in parts]
    per_build = []
    cpu = describe_cpu()
    for part in parts:
        build = part.build
        scores = score_build(build, frames, gt, args.frames, ranker=part.ranker, threads=args.threads, proposals=args.proposals,
                             repeat=args.repeat, iou=args.iou, threshold=args.threshold, overlap=args.overlap,
                             sign_map=part.sign_map, second_look=not args.no_second_look, budget=part.budget)
        per_build.append(scores)
        if not args.json:
            n_frames, n_signs = scores[0].frames, scores[0].signs
            look = ", no second look" if args.no_second_look else ""
            print(f"{build} on {n_frames} frames of {args.frames} ({n_signs} signs), threshold {scores[0].threshold:.3f}{look}, "
                  f"timed on {cpu}")
            print(format_scores(scores))
            builtin = [x for x in scores if x.ap]
            if builtin:
                print(format_ap(builtin[0]))
    scores = [s for run in per_build for s in run]
    if len(per_build) > 1:  # the same setting of every build, pooled
        pooled = [pool([run[i] for run in per_build]) for i in range(len(per_build[0]))]
        scores += pooled
        if not args.json:
            print(f"pooled over the {len(per_build)} builds, each on the frames that did not train it")
            print(format_scores(pooled))
            if pooled[0].ap:
                print(format_ap(pooled[0]))
    if args.json:
        print(json.dumps([{**{k: v for k, v in asdict(s).items() if k not in ("ranked", "truth")}, "fps": s.fps, "cpu": cpu}
                          for s in scores], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
