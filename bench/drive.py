"""A "driving toward" video made from separate road frames, and the camera demo's output scored against it.

    python -m bench.drive --frames data/GTSDB/gtsdb --out drive.mp4
    python -m camera_demo --build model_int8.tflite --source drive.mp4 --headless --jsonl out.jsonl
    python -m bench.drive --score out.jsonl --gt drive_gt.jsonl

GTSDB frames are separate scenes, so played in a row they cannot show what temporal smoothing or
tracking do. Here each frame becomes a short clip (``--steps`` frames) zooming from the whole frame
toward a point ahead of the camera (``--toward``), as a car approaching: signs grow and drift
outward. Each frame also gets what makes two camera frames differ: exposure jitter, horizontal
motion blur and sensor noise (``--exposure``, ``--blur``, ``--noise``), seeded. The ground-truth
boxes are moved the same way, one track per physical sign; a sign cut by the frame's edge (less
than ``--visible`` of it inside) is a "don't care" region, where a detection is neither a hit nor a
false alarm.

Scoring gives precision, recall and F1 over all frames (a hit: IoU >= 0.5 and the right class) and
label flips per track: how often the label of the detection covering a sign changes from one frame
to the next.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.matching import match_pairs
from runtime.annotations import frame_files, read_frame
from runtime.atomic import atomic_path, ensure_writable_dir
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.roi import iou_matrix

# .mkv is lossless (FFV1): every OpenCV decodes the same pixels, so runs on two machines can be compared exactly.
CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}


def zoom_matrix(scale: float, toward: tuple[float, float]) -> np.ndarray:
    """The affine map of a zoom by ``scale`` that keeps the point ``toward`` (pixels) where it is."""
    px, py = toward
    return np.array([[scale, 0.0, px * (1 - scale)], [0.0, scale, py * (1 - scale)]])


def move_box(box: Sequence[float], m: np.ndarray, width: int, height: int, visible: float) -> tuple[tuple[int, int, int, int], bool]:
    """A box under the zoom, clipped to the frame, and whether enough of it is inside to score (else: don't care)."""
    x1, y1 = m[0, 0] * box[0] + m[0, 2], m[1, 1] * box[1] + m[1, 2]
    x2, y2 = m[0, 0] * box[2] + m[0, 2], m[1, 1] * box[3] + m[1, 2]
    cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
    area = (x2 - x1) * (y2 - y1)
    inside = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1) / area if area > 0 else 0.0
    return (round(cx1), round(cy1), round(cx2), round(cy2)), inside >= visible


@dataclass(frozen=True)
class DriveSpec:
    steps: int = 12  # frames per source frame
    zoom: float = 1.8  # scale reached at the last step
    toward: tuple[float, float] = (0.5, 0.45)  # the point approached, as fractions of width and height
    fps: float = 15.0
    visible: float = 0.8  # share of a sign inside the frame for it to count
    exposure: float = 0.08  # brightness factor 1 +- this, per frame
    blur: int = 5  # horizontal motion blur up to this many pixels, per frame (1: none)
    noise: float = 3.0  # sensor noise, standard deviation in grey levels
    seed: int = 0


def camera_effects(frame: np.ndarray, spec: DriveSpec, rng: np.random.Generator) -> np.ndarray:
    """One camera frame's exposure, motion blur and sensor noise."""
    out: np.ndarray = frame.astype(np.float32) * float(rng.uniform(1 - spec.exposure, 1 + spec.exposure))
    k = int(rng.integers(1, max(1, spec.blur) + 1))
    if k > 1:
        out = cv2.filter2D(out, -1, np.full((1, k), 1.0 / k, np.float32))
    if spec.noise > 0:
        out += rng.normal(0.0, spec.noise, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_drive(data: Path, out: Path, gt_out: Path, spec: DriveSpec = DriveSpec(), progress: bool = True,
               limit: int | None = None) -> dict[str, Any]:
    """Write the video and its ground truth (one JSON line per video frame); return a summary."""
    files, gt = frame_files(data)
    files = dict(list(files.items())[:limit])
    first = read_frame(next(iter(files.values())))
    h, w = first.shape[:2]
    if out.suffix.lower() not in CODECS:
        raise ConfigError(f"--out {out}: write a {', '.join(CODECS)} video")
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    toward = (spec.toward[0] * w, spec.toward[1] * h)
    scales = np.geomspace(1.0, spec.zoom, spec.steps) if spec.steps > 1 else np.ones(1)
    fourcc = cv2.VideoWriter.fourcc(*CODECS[out.suffix.lower()])
    n = signs = 0
    rng = np.random.default_rng(spec.seed)
    with atomic_path(out) as tmp_video, atomic_path(gt_out) as tmp_gt, open(tmp_gt, "w") as gt_file:
        writer = cv2.VideoWriter(str(tmp_video), fourcc, spec.fps, (w, h))
        if not writer.isOpened():
            raise ConfigError(f"--out {out}: OpenCV cannot write this video here; try .avi")
        try:
            for k, (stem, path) in enumerate(files.items()):
                frame = read_frame(path, gt.get(stem, ()))
                if frame.shape[:2] != (h, w):
                    raise ConfigError(f"{path} is {frame.shape[1]}x{frame.shape[0]}, not {w}x{h} like the first frame")
                truth = gt.get(stem, [])
                signs += len(truth)
                for step, s in enumerate(scales):
                    m = zoom_matrix(float(s), toward)
                    moved = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                    writer.write(camera_effects(moved, spec, rng))
                    boxes, ignore = [], []
                    for j, a in enumerate(truth):
                        box, counts = move_box(a.box, m, w, h, spec.visible)
                        if counts:
                            boxes.append({"box": list(box), "class_id": a.class_id, "track": f"{stem}:{j}"})
                        elif box[2] > box[0] and box[3] > box[1]:
                            ignore.append(list(box))
                    gt_file.write(json.dumps({"frame": n, "source": stem, "step": step, "scale": round(float(s), 4),
                                              "signs": boxes, "ignore": ignore}) + "\n")
                    n += 1
                if progress and (k + 1) % 10 == 0:
                    print(f"{k + 1}/{len(files)} source frames", file=sys.stderr)
        finally:
            writer.release()
    return {"video": str(out), "gt": str(gt_out), "frames": n, "source_frames": len(files), "signs": signs,
            "size": [w, h], **asdict(spec)}


# --- scoring ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DriveScore:
    frames: int
    signs: int  # sign appearances (a sign in 12 frames counts 12 times)
    detections: int
    true_positives: int
    precision: float
    recall: float
    f1: float
    tracks: int
    tracks_detected: int  # tracks covered by a detection in at least one frame
    label_flips: int
    flips_per_track: float  # over the tracks that were detected
    crops: float | None = None  # a frame's mean crops classified (second look included), from the JSONL's "cost"
    gmacs: float | None = None  # a frame's mean G multiply-accumulates (None: the JSONL does not say)


def read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read ({err.strerror})") from None
    out = []
    for i, line in enumerate(lines, start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ConfigError(f"{what} {path} line {i} is not JSON; pass the file the tool wrote") from None
    return out


def _ignored(box: Sequence[float], ignore: Sequence[Sequence[float]]) -> bool:
    return bool(ignore) and float(iou_matrix([box], ignore).max()) >= 0.3


def score_drive(pred: list[dict[str, Any]], truth: list[dict[str, Any]], iou: float = 0.5) -> DriveScore:
    """Precision / recall / F1 over the frames of ``truth``, and label flips along each sign's track."""
    by_frame = {int(r["frame"]): r for r in pred}
    tp = n_det = n_gt = flips = 0
    labels: dict[str, list[int]] = {}
    for t in truth:
        dets = by_frame.get(int(t["frame"]), {"detections": []})["detections"]
        dets = [d for d in dets if not _ignored(d["box"], t["ignore"])]
        gt_boxes, gt_cls = [s["box"] for s in t["signs"]], [s["class_id"] for s in t["signs"]]
        det_boxes, det_cls = [d["box"] for d in dets], [d["class_id"] for d in dets]
        tp += len(match_pairs(det_boxes, det_cls, gt_boxes, gt_cls, iou))
        n_det += len(dets)
        n_gt += len(gt_boxes)
        for ti, di in match_pairs(det_boxes, det_cls, gt_boxes, gt_cls, iou, need_class=False):
            labels.setdefault(t["signs"][ti]["track"], []).append(int(det_cls[di]))
    tracks = {s["track"] for t in truth for s in t["signs"]}
    for seq in labels.values():
        flips += sum(a != b for a, b in pairwise(seq))
    precision = tp / n_det if n_det else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    costs = [r["cost"] for r in pred if isinstance(r.get("cost"), dict)]
    crops = sum(c.get("crops", 0) + c.get("second_look_crops", 0) for c in costs) / len(costs) if costs else None
    gmacs = sum(c.get("macs", 0) for c in costs) / len(costs) / 1e9 if costs else None
    return DriveScore(len(truth), n_gt, n_det, tp, precision, recall, f1, len(tracks), len(labels), flips,
                      flips / len(labels) if labels else 0.0, crops, gmacs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.drive", formatter_class=HelpFormatter,
        description="Make a driving-toward video from GTSDB-layout frames, or score a camera-demo JSONL against it.",
        epilog="examples:\n  python -m bench.drive --frames data/GTSDB/gtsdb --out drive.mp4\n"
               "  python -m bench.drive --score out.jsonl --gt drive_gt.jsonl",
    )
    make = p.add_argument_group("make a video")
    make.add_argument("--frames", type=Path, help="GTSDB-layout folder: frames + gt.txt")
    make.add_argument("--out", type=Path, help="video to write (.mp4, .avi, or .mkv: lossless); its ground truth goes "
                                               "beside it as OUT_gt.jsonl")
    make.add_argument("--max-frames", type=int, default=None, help="use only the first N source frames")
    make.add_argument("--steps", type=int, default=DriveSpec.steps, help="video frames per source frame")
    make.add_argument("--zoom", type=float, default=DriveSpec.zoom, help="scale reached at a clip's last frame")
    make.add_argument("--toward", type=float, nargs=2, default=DriveSpec.toward, metavar=("X", "Y"),
                      help="the point approached, as fractions of the frame's width and height")
    make.add_argument("--fps", type=float, default=DriveSpec.fps, help="the video's frame rate")
    make.add_argument("--visible", type=float, default=DriveSpec.visible,
                      help="share of a sign inside the frame for it to be scored (else: don't care)")
    make.add_argument("--exposure", type=float, default=DriveSpec.exposure, help="per-frame brightness factor 1 +- this")
    make.add_argument("--blur", type=int, default=DriveSpec.blur, help="per-frame horizontal motion blur up to this many px")
    make.add_argument("--noise", type=float, default=DriveSpec.noise, help="sensor noise, grey levels (standard deviation)")
    make.add_argument("--seed", type=int, default=DriveSpec.seed, help="exposure, blur and noise draws")
    score = p.add_argument_group("score a demo run")
    score.add_argument("--score", type=Path, help="JSONL written by python -m camera_demo --jsonl")
    score.add_argument("--gt", type=Path, help="ground truth written with the video (OUT_gt.jsonl)")
    score.add_argument("--iou", type=float, default=0.5, help="IoU needed for a hit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_errors("python -m bench.drive")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.score or args.gt:
        if not (args.score and args.gt):
            parser.error("scoring needs both --score OUT.jsonl and --gt DRIVE_gt.jsonl")
        result: dict[str, Any] = asdict(score_drive(read_jsonl(args.score, "--score"), read_jsonl(args.gt, "--gt"), args.iou))
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            r = result
            print(f"{r['frames']} frames, {r['signs']} sign appearances of {r['tracks']} signs: precision {r['precision']:.3f} "
                  f"recall {r['recall']:.3f} F1 {r['f1']:.3f}; label flips {r['label_flips']} "
                  f"({r['flips_per_track']:.2f} per detected sign, {r['tracks_detected']} detected)"
                  + (f"; a frame: {r['crops']:.1f} crops, {r['gmacs']:.3f} G MACs" if r["gmacs"] is not None else ""))
        return 0
    if not (args.frames and args.out):
        parser.error("give --frames DIR --out VIDEO to make a video, or --score OUT.jsonl --gt DRIVE_gt.jsonl to score")
    if args.steps < 1 or args.zoom < 1 or not 0 < args.visible <= 1 or (args.max_frames is not None and args.max_frames < 1):
        parser.error("--steps and --max-frames must be at least 1, --zoom at least 1, --visible in (0, 1]")
    if args.exposure < 0 or args.blur < 1 or args.noise < 0:
        parser.error("--exposure and --noise must be at least 0, --blur at least 1")
    gt_out = args.out.with_name(args.out.stem + "_gt.jsonl")
    spec = DriveSpec(args.steps, args.zoom, tuple(args.toward), args.fps, args.visible, args.exposure, args.blur, args.noise,
                     args.seed)
    info = make_drive(args.frames, args.out, gt_out, spec, progress=not args.quiet, limit=args.max_frames)
    print(json.dumps(info, indent=2) if args.json else
          f"{info['frames']} frames ({info['source_frames']} source frames x {args.steps}) -> {args.out}; ground truth {gt_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
