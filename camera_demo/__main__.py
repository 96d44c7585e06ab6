"""Read the signs a camera sees, live: the runtime's frame pipeline on a Pi camera, USB camera, video or folder.

    python -m camera_demo --build runs/quickstart/model_int8.tflite --source picamera2 --serve 8000
    python -m camera_demo --build model_int8.tflite --source drive.mp4 --headless --jsonl out.jsonl --smooth 5

Sources: picamera2 (the Pi's CSI camera), a camera number or /dev/videoN, a video file, a stream URL
(rtsp://, http://, tcp://), or a folder of images (name order). ROIs: --detect (the built-in
proposals; use a build with a background class), --roi boxes, or --rois a JSON file. A window
opens where a display and a GUI-capable OpenCV exist; --serve streams the annotated frames to a
browser. On exit (end of source, Ctrl-C, q/Esc) it prints frames, frame rates, per-stage ms and
detections per class.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from camera_demo.demo import DemoOptions, Sinks, run_demo
from camera_demo.display import Window, window_unavailable
from camera_demo.outputs import JsonlWriter, SnapshotWriter, VideoSaver
from camera_demo.server import FrameBoard, MjpegServer
from camera_demo.sources import Reconnecting, Source, open_source
from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.bundle import Bundle, is_bundle
from runtime.classifier import Classifier
from runtime.cli import HelpFormatter, frame_size
from runtime.errors import ConfigError, cli_errors
from runtime.pipeline import BETWEEN, PROFILES, FramePipeline, Profile, split_cores
from runtime.proposals import Ranker, default_ranker
from runtime.roi import Box, load_boxes, parse_boxes
from runtime.sign_map import SignMap
from runtime.stream import StreamOptions


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: choose one of 1024-65535 (0: any free one)")
    return port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m camera_demo", formatter_class=HelpFormatter,
        description="Classify the signs a camera sees, live, with any build (TensorFlow-free).",
        epilog="examples:\n  python -m camera_demo --build runs/quickstart/model_int8.tflite --source picamera2 --serve 8000\n"
               "  python -m camera_demo --build model_int8.tflite --source drive.mp4 --headless --jsonl out.jsonl --smooth 5",
    )
    p.add_argument("--build", type=Path, required=True,
                   help="a .tflite/.onnx build with its metadata, or a bundle folder (python -m export.bundle: the build, "
                        "its ranker and sign map)")
    p.add_argument("--profile", default=None, choices=list(PROFILES),
                   help="the budget a frame and how often the full proposals run (default: a bundle's own, else full): "
                        + "; ".join(f"{k}: {v.why}" for k, v in PROFILES.items()))
    p.add_argument("--source", default="auto",
                   help="picamera2, a camera number or /dev/videoN, a video file, a stream URL or an image folder "
                        "(auto: picamera2 where it is installed, else camera 0)")
    rois = p.add_mutually_exclusive_group()
    rois.add_argument("--detect", action="store_true", help="find the signs with the built-in proposals (the default)")
    rois.add_argument("--roi", nargs="+", metavar="X1,Y1,X2,Y2", help="classify these fixed boxes in every frame")
    rois.add_argument("--rois", type=Path, metavar="FILE.json", help="fixed boxes from a JSON file [[x1,y1,x2,y2], ...]")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads (default: all cores, or half of them when the stages overlap)")
    p.add_argument("--no-overlap", action="store_true",
                   help="propose and classify one frame after the other, instead of proposing the next frame meanwhile")
    p.add_argument("--threshold", type=float, default=None, help="override the build's unknown threshold")
    p.add_argument("--ranker", type=Path, default=None, help="proposal ranker JSON (default: the runtime's own)")
    p.add_argument("--no-second-look", action="store_true",
                   help="keep every detection as first read, without cropping it again at 0.9, 1.15 and 1.3 times its "
                        "box and keeping it when 2 of the 3 agree (what it costs and removes: docs/decisions.md)")
    p.add_argument("--sign-map", type=Path, default=None,
                   help="a learned proposal source (python -m train.frames.sign_map) beside the colour cues, on full frames")
    p.add_argument("--size", type=frame_size, default=None, help="camera resolution WxH (picamera2 default 1280x720)")
    p.add_argument("--fps", type=float, default=None, help="at most this many frames per second (and the camera's rate)")
    p.add_argument("--loop", action="store_true", help="play a file or folder again from the start at its end")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--smooth", type=int, default=1, metavar="N",
                   help="steady labels: a sign's label is the vote of its last N detections (1: off; 5 is a good start)")
    p.add_argument("--detect-every", type=int, default=None, metavar="K",
                   help="with --detect: propose every K-th frame and follow the signs found in between (default: the "
                        "profile's)")
    p.add_argument("--between", choices=BETWEEN, default=None,
                   help="what the frames between two full detections do: windows (look again around each sign "
                        "followed, with its colour's cues) or carry (classify nothing; find each sign of the last full frame "
                        "again by its look, near where its track says it is). Default: the profile's")
    p.add_argument("--headless", action="store_true", help="no window, even where one could open")
    p.add_argument("--serve", type=_port, default=None, metavar="PORT", help="stream the annotated frames to a browser")
    p.add_argument("--serve-host", default="127.0.0.1",
                   help="address to serve on (0.0.0.0: every network the machine is on)")
    p.add_argument("--save", type=Path, default=None,
                   help="annotated video (.mp4, or .avi to survive a power cut); about 2-4 GB an hour at 1280x720, 30 fps")
    p.add_argument("--jsonl", type=Path, default=None,
                   help="one JSON line per frame: boxes, classes, scores, crops, MACs, ms; about 350 bytes a frame "
                        "with a sign or two (measured): 40 MB an hour at 30 fps")
    p.add_argument("--snapshots", type=Path, default=None,
                   help="folder for the crops of new detections (PNG, a few KB each, one per new sign)")
    p.add_argument("--rotate-mb", type=float, default=None, metavar="MB",
                   help="--jsonl and --save go on in a new file at this size, the last 3 kept (FILE.1, FILE.2, FILE.3): "
                        "for a run of days or weeks")
    p.add_argument("--max-snapshots", type=int, default=None, metavar="N",
                   help="keep the newest N snapshots, remove older ones")
    p.add_argument("--reconnect", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for a lost camera or stream to come back")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the exit summary as JSON")
    return p


def _fixed_boxes(args: argparse.Namespace) -> tuple[Box, ...] | None:
    if args.roi:
        return tuple(b for text in args.roi for b in parse_boxes(text))
    if args.rois:
        return tuple(load_boxes(args.rois))
    return None


def _open_source(args: argparse.Namespace, log: Any) -> Source:
    spec = args.source
    if spec == "auto":
        try:
            import picamera2  # noqa: F401

            spec = "picamera2"
        except ImportError:
            spec = "0"
        log(f"--source auto: using {spec}")
    def opener() -> Source:
        return open_source(spec, size=args.size, fps=args.fps)

    return Reconnecting(opener, args.reconnect, log) if args.reconnect > 0 else opener()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (systemctl stop) ends the run as Ctrl-C does: outputs closed, summary printed


@cli_errors("python -m camera_demo")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value in (("--threads", args.threads), ("--smooth", args.smooth), ("--detect-every", args.detect_every)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if args.fps is not None and args.fps <= 0:
        parser.error("--fps must be positive")
    if (args.rotate_mb is not None and args.rotate_mb <= 0) or (args.max_snapshots is not None and args.max_snapshots < 1):
        parser.error("--rotate-mb must be above 0 and --max-snapshots at least 1")
    boxes = _fixed_boxes(args)
    if boxes is not None and args.detect_every is not None and args.detect_every > 1:
        parser.error("--detect-every needs --detect: fixed boxes are classified in every frame")
    if boxes is not None and args.between is not None:
        parser.error("--between needs --detect: fixed boxes are classified in every frame")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    overlap = boxes is None and not args.no_overlap
    cores = os.cpu_count() or 1
    threads = args.threads
    cv_threads = cv2.getNumThreads()
    if overlap:  # the two stages share the cores rather than both using all of them
        auto_threads, opencv_threads = split_cores(cores)
        threads = threads or auto_threads
        cv2.setNumThreads(opencv_threads)
    try:
        return _run(args, boxes, overlap, threads or cores, log)
    finally:
        cv2.setNumThreads(cv_threads)


def _pipeline(args: argparse.Namespace, threads: int) -> tuple[FramePipeline, Profile]:
    """The frame pipeline of --build (a build and --ranker/--sign-map, or a bundle carrying them) at its profile."""
    if is_bundle(args.build):
        if args.ranker or args.sign_map:
            raise ConfigError(f"--build {args.build} is a bundle: it carries its own ranker and sign map; leave out --ranker "
                              f"and --sign-map")
        bundle = Bundle.open(args.build)
        profile = PROFILES[args.profile] if args.profile else bundle.profile
        return bundle.pipeline(threads, args.threshold, args.profile, not args.no_second_look), profile
    profile = PROFILES[args.profile or "full"]
    clf = Classifier.from_build(args.build, threads=threads, threshold=args.threshold)
    ranker = Ranker.load(args.ranker) if args.ranker else default_ranker()
    return FramePipeline(clf, ranker=ranker, sign_map=SignMap(args.sign_map) if args.sign_map else None,
                         second_look=not args.no_second_look, budget=profile.budget), profile


def _run(args: argparse.Namespace, boxes: tuple[Box, ...] | None, overlap: bool, threads: int, log: Any) -> int:
    pipeline, profile = _pipeline(args, threads)
    clf = pipeline.classifier
    if boxes is None and clf.background_class is None:
        log(f"note: {args.build.name} has no background class; with --detect it will call leaves and windows signs "
            f"(train one with --background, README: Not a sign)")
    sinks = Sinks()
    server = None
    source = None
    in_main_thread = threading.current_thread() is threading.main_thread()  # signals can only be set there
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        source = _open_source(args, log)
        if args.jsonl:
            sinks.jsonl = JsonlWriter(args.jsonl, args.rotate_mb)
        if args.save:
            sinks.video = VideoSaver(args.save, args.fps or source.fps or 15.0, args.rotate_mb)
        if args.snapshots:
            sinks.snapshots = SnapshotWriter(args.snapshots, clf.preprocess.margin, args.max_snapshots)
        if args.serve is not None:
            sinks.board = FrameBoard()
            server = MjpegServer(sinks.board, args.serve, args.serve_host)
            exposed = " (reachable from other machines: anyone on the network can watch)" if args.serve_host != "127.0.0.1" else ""
            log(f"serving the annotated frames at http://{args.serve_host}:{server.port}/{exposed}")
        if not args.headless:
            why = window_unavailable()
            if why:
                log(f"running headless: {why}")
            else:
                sinks.window = Window()
        every = args.detect_every or (profile.detect_every if boxes is None else 1)
        stream = StreamOptions(boxes, every, args.between or profile.between, args.smooth, overlap, live=source.live)
        options = DemoOptions(stream, args.fps, args.loop, args.max_frames)
        summary = run_demo(source, pipeline, options, sinks, log)
    finally:
        sinks.close()
        if server is not None:
            server.close()
        if source is not None:
            source.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(summary.format())
    if args.summary_json:
        write_text_atomic(ensure_writable_dir(args.summary_json.parent, "--summary-json") / args.summary_json.name,
                          json.dumps(summary.to_dict(), indent=2))
    if summary.error:
        raise ConfigError(summary.error)
    if summary.frames == 0 and summary.reason == "end of source":
        bad = f" ({summary.skipped[0]} unreadable: {', '.join(summary.skipped[1])})" if summary.skipped[0] else ""
        raise ConfigError(f"--source {args.source} gave no frame{bad}; pass a video, a folder of images, a camera or a "
                          f"stream")
    return 0


if __name__ == "__main__":
    sys.exit(main())
