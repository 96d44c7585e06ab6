"""Run the camera demo on an endless source and print what it holds as it runs: memory, threads, open files.

    python -m bench.soak --build runs/quickstart/model_int8.tflite --source FRAMES --max-frames 200000
    python -m bench.soak --build runs/quickstart/model_int8.onnx --source clip.mp4 --size 640x360 --every 5000

The source (a video or a folder of images) is played in a loop, resized to ``--size``, through the demo's own loop
(``camera_demo.demo.run_demo``) with ``--detect``, the browser stream served, a JSON line a frame written with
rotation, and a client reading the stream for ``--watch`` seconds of every ``--period``. Every ``--every`` frames it
prints the process's resident memory, its threads and its open files: what a device left running for weeks must
keep flat. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import cv2

from camera_demo.demo import DemoOptions, Sinks, run_demo
from camera_demo.outputs import JsonlWriter
from camera_demo.server import FrameBoard, MjpegServer
from camera_demo.sources import Source, open_source
from runtime.classifier import Classifier
from runtime.cli import HelpFormatter, frame_size
from runtime.errors import cli_errors
from runtime.machine import describe_cpu
from runtime.pipeline import FramePipeline
from runtime.proposals import Ranker, default_ranker
from runtime.sign_map import SignMap
from runtime.stream import Frame, StreamOptions


class Resized:
    """A source's frames at another size (a soak at a size the machine runs fast enough)."""

    def __init__(self, source: Source, size: tuple[int, int] | None) -> None:
        self.source, self.size = source, size
        self.name, self.live, self.fps = source.name, source.live, source.fps

    def read(self) -> Frame | None:
        frame = self.source.read()
        if frame is None or self.size is None:
            return frame
        return Frame(cv2.resize(frame.image, self.size, interpolation=cv2.INTER_AREA), frame.timestamp, frame.index, frame.name)

    def rewind(self) -> None:
        rewind = getattr(self.source, "rewind", None)  # a file or folder: played again from its start
        if rewind is not None:
            rewind()

    def close(self) -> None:
        self.source.close()


def holdings() -> dict[str, float]:
    """The process's resident memory (MB), threads and open files, from /proc (Linux)."""
    rss = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        files = len(os.listdir("/proc/self/fd"))
    except OSError:
        files = -1
    return {"rss_mb": round(rss, 1), "threads": threading.active_count(), "open_files": files}


def _watch(url: str, seconds: float, period: float, stop: threading.Event) -> None:
    """A browser tab that comes and goes: reads the stream for ``seconds`` of every ``period``."""
    while not stop.wait(max(0.0, period - seconds)):
        end = time.monotonic() + seconds
        try:
            with urllib.request.urlopen(url + "stream.mjpg", timeout=10) as resp:
                while time.monotonic() < end and not stop.is_set():
                    resp.read(65536)
        except OSError:
            pass


def soak(build: Path, source: str, *, max_frames: int, size: tuple[int, int] | None, every: int, watch: float,
         period: float, ranker: Path | None = None, sign_map: Path | None = None, out: Path | None = None) -> list[dict]:
    """Run the demo until ``max_frames``; print and return the holdings every ``every`` frames."""
    clf = Classifier.from_build(build, threads=1)
    pipe = FramePipeline(clf, ranker=Ranker.load(ranker) if ranker else default_ranker(),
                         sign_map=SignMap(sign_map) if sign_map else None)
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="signkit-soak-"))
    board = FrameBoard()
    server = MjpegServer(board, 0)
    sinks = Sinks(jsonl=JsonlWriter(work / "soak.jsonl", rotate_mb=20), board=board)
    stop = threading.Event()
    viewer = threading.Thread(target=_watch, args=(server.url, watch, period, stop), name="soak-viewer", daemon=True)
    viewer.start()
    rows: list[dict] = []
    t0 = time.perf_counter()

    def counted(summary_frames: int) -> None:
        if summary_frames % every:
            return
        row = {"frames": summary_frames, "seconds": round(time.perf_counter() - t0, 1), **holdings()}
        rows.append(row)
        print(f"frames {row['frames']:>8}: RSS {row['rss_mb']:7.1f} MB, threads {row['threads']:>3}, open files "
              f"{row['open_files']:>4}, {row['frames'] / max(row['seconds'], 1e-9):6.1f} frames/s", flush=True)

    src = Resized(open_source(source), size)
    options = DemoOptions(StreamOptions(), loop=True, max_frames=max_frames)
    print(f"soak: {build} on {source}{f' at {size[0]}x{size[1]}' if size else ''}, {describe_cpu()}; serving "
          f"{server.url}, a viewer {watch:g} s of every {period:g} s", flush=True)
    try:
        summary = run_demo(src, pipe, options, sinks, log=lambda m: None, on_frame=counted)
    finally:
        stop.set()
        server.close()
        src.close()
    if summary.frames % every:
        every = 1
        counted(summary.frames)
    print(summary.format())
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", formatter_class=HelpFormatter,
        description="Run the camera demo on an endless source and print what it holds as it runs.",
        epilog="examples:\n  python -m bench.soak --build runs/quickstart/model_int8.tflite --source FRAMES --max-frames 200000\n"
               "  python -m bench.soak --build runs/quickstart/model_int8.onnx --source clip.mp4 --size 640x360 --every 5000",
    )
    p.add_argument("--build", type=Path, required=True, help="a .tflite/.onnx build with its metadata")
    p.add_argument("--source", required=True, help="a video file or a folder of images, played in a loop")
    p.add_argument("--max-frames", type=int, default=200_000, help="frames to run")
    p.add_argument("--size", type=frame_size, default=None, metavar="WxH", help="resize every frame to this (default: as it is)")
    p.add_argument("--every", type=int, default=10_000, metavar="N", help="print the holdings every N frames")
    p.add_argument("--watch", type=float, default=20.0, metavar="SECONDS", help="a viewer reads the stream this long ...")
    p.add_argument("--period", type=float, default=60.0, metavar="SECONDS", help="... in every period this long")
    p.add_argument("--ranker", type=Path, default=None, help="proposal ranker JSON (default: the runtime's own)")
    p.add_argument("--sign-map", type=Path, default=None, help="a learned proposal source beside the colour cues")
    p.add_argument("--out", type=Path, default=None, help="folder for the rotated JSON lines (default: a temp folder)")
    return p


@cli_errors("python -m bench.soak")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_frames < 1 or args.every < 1 or not 0 < args.watch <= args.period:
        parser.error("--max-frames and --every must be at least 1, --watch above 0 and at most --period")
    soak(args.build, args.source, max_frames=args.max_frames, size=args.size, every=args.every, watch=args.watch,
         period=args.period, ranker=args.ranker, sign_map=args.sign_map, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
