"""The demo loop: frames from a source through the runtime's FramePipeline, to the window and the outputs.

The source is read on its own thread (decoding overlaps inference; OpenCV lets go of the GIL). A
file or folder is read ahead a couple of frames and never dropped; a live camera keeps only its
newest frame, and the frames it had to drop are counted.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camera_demo.display import Window
from camera_demo.draw import annotate, status_line
from camera_demo.outputs import JsonlWriter, SnapshotWriter, VideoSaver
from camera_demo.server import FrameBoard
from camera_demo.sources import Frame, Source, SourceError, frames
from camera_demo.tracking import Tracked, Tracker
from runtime.machine import describe_cpu
from runtime.pipeline import FramePipeline, ProposalsAhead
from runtime.roi import Box


@dataclass(frozen=True)
class DemoOptions:
    boxes: tuple[Box, ...] | None = None  # fixed ROIs; None: the runtime's proposals (--detect)
    detect_every: int = 1  # --detect: propose every K-th frame, follow the signs found in between
    smooth: int = 1  # a track's label is the vote of its last N detections
    overlap: bool = True  # propose the next frame on another thread while this one is classified
    fps_cap: float | None = None
    loop: bool = False
    max_frames: int | None = None


@dataclass
class Sinks:
    jsonl: JsonlWriter | None = None
    video: VideoSaver | None = None
    snapshots: SnapshotWriter | None = None
    board: FrameBoard | None = None
    window: Window | None = None

    @property
    def draws(self) -> bool:
        return self.video is not None or self.board is not None or self.window is not None

    def close(self) -> None:
        for sink in (self.jsonl, self.video, self.window):
            if sink is not None:
                sink.close()


@dataclass
class Summary:
    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    reason: str = "end of source"
    error: str | None = None
    frame_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    per_class: Counter[str] = field(default_factory=Counter)
    tracks: int = 0
    unconfirmed: int = 0  # detections the pipeline's second look dropped, over the run
    snapshots: int = 0
    cpu: str = field(default_factory=describe_cpu)  # the frame rates mean little without it

    def fps(self, pct: float = 50) -> float:
        """Frames per second at the median (50) or at a low percentile (5: all but the slowest 5 % of frames)."""
        if not self.frame_ms:
            return 0.0
        return 1000.0 / max(float(np.percentile(self.frame_ms, 100 - pct)), 1e-9)

    def medians(self) -> dict[str, float]:
        return {k: float(np.median(v)) for k, v in self.stage_ms.items() if v}

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "seconds": round(self.seconds, 3),
                "fps_overall": round(self.frames / self.seconds, 2) if self.seconds else 0.0, "fps_median": round(self.fps(50), 2),
                "fps_p5": round(self.fps(5), 2), "ms": {k: round(v, 3) for k, v in self.medians().items()},
                "detections_per_class": dict(self.per_class.most_common()), "tracks": self.tracks,
                "unconfirmed": self.unconfirmed,
                "frames_dropped": self.dropped, "snapshots": self.snapshots, "stopped_by": self.reason, "error": self.error, "cpu": self.cpu}

    def format(self) -> str:
        ms = " ".join(f"{k} {v:.2f}" for k, v in self.medians().items())
        classes = ", ".join(f"{name} {n}" for name, n in self.per_class.most_common()) or "none"
        overall = self.frames / self.seconds if self.seconds else 0.0
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.reason}): {overall:.1f} fps overall; per frame "
                f"median {self.fps(50):.1f}, 5th percentile {self.fps(5):.1f}; frames dropped {self.dropped}; on {self.cpu}\n"
                f"median ms per frame: {ms}\n"
                f"detections per class ({self.tracks} tracks; the second look dropped {self.unconfirmed} detections): {classes}")


class ReadAhead:
    """Frames from a source, read on a thread of their own."""

    def __init__(self, source: Source, loop: bool) -> None:
        self.live = source.live
        self._q: queue.Queue[Frame | BaseException | None] = queue.Queue(maxsize=1 if self.live else 3)
        self._stop = threading.Event()
        self.dropped = 0  # frames of a live source replaced by a newer one before they were processed
        self._thread = threading.Thread(target=self._run, args=(frames(source, loop=loop),), name="frame-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Frame | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.live and isinstance(item, Frame):
                    try:
                        self._q.get_nowait()  # keep the newest frame of a live camera
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def _run(self, it: Iterator[Frame]) -> None:
        try:
            for frame in it:
                if self._stop.is_set():
                    return
                self._put(frame)
            self._put(None)
        except BaseException as err:  # noqa: BLE001 - handed to the loop, which raises it there
            self._put(err)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)


def _record(frame: Frame, tracked: Sequence[Tracked], proposed: bool, ms: dict[str, float], unconfirmed: int) -> dict[str, Any]:
    return {"frame": frame.index, "timestamp": round(frame.timestamp, 4), "proposed": proposed,
            "detections": [{"box": list(t.detection.box), "class_id": t.class_id, "label": t.label,
                            "score": round(t.detection.prediction.score, 4), "track": t.track,
                            "frame_class_id": t.detection.prediction.class_id} for t in tracked],
            "unconfirmed": unconfirmed, "ms": {k: round(v, 3) for k, v in ms.items()}}


def run_demo(source: Source, pipeline: FramePipeline, options: DemoOptions, sinks: Sinks,
             log: Callable[[str], None] = print) -> Summary:
    """Run until the source ends, ``max_frames``, q/Esc in the window, or Ctrl-C / SIGTERM (KeyboardInterrupt).

    The outputs are closed on every way out. A source lost mid-stream ends the run with
    ``summary.error`` set; everything it wrote until then stays readable.
    """
    summary = Summary()
    tracker = Tracker(window=max(1, options.smooth))
    names = pipeline.classifier.class_names
    reader = ReadAhead(source, options.loop)
    ahead = ProposalsAhead(pipeline) if options.overlap and options.boxes is None else None
    expected: int | None = None
    start = last = time.perf_counter()

    def proposing(n: int) -> bool:
        return options.boxes is None and n % options.detect_every == 0

    frames = iter(reader)
    lost: SourceError | None = None

    def pull() -> Frame | None:
        """The next frame; a lost source is kept to raise once the frames it did deliver are processed."""
        nonlocal lost
        if lost is not None:
            return None
        try:
            return next(frames, None)
        except SourceError as err:
            lost = err
            return None

    # Frames read ahead of the one being processed; a full-proposal frame among them starts its proposals
    # at once, on ProposalsAhead's thread. One frame ahead for a camera or stream (no frame is held back
    # from the screen); a file or folder is read up to the next full-proposal frame, so with --detect-every K
    # that frame's proposals run while the K-1 frames before it are followed.
    depth = options.detect_every if ahead is not None and not source.live else 1
    waiting: deque[tuple[int, Frame]] = deque()
    pulled = 0

    def fill() -> None:
        nonlocal pulled
        while len(waiting) < depth:
            nxt = pull()
            if nxt is None:
                return
            if ahead is not None and proposing(pulled):
                ahead.submit(pulled, nxt.image)
            waiting.append((pulled, nxt))
            pulled += 1

    try:
        fill()
        while waiting:
            n, frame = waiting.popleft()
            fill()
            got = time.perf_counter()
            if expected is not None and frame.index > expected:
                summary.dropped += frame.index - expected  # gaps in the source's own frame numbers
            expected = frame.index + 1
            proposed = proposing(n)
            if options.boxes is not None:
                result = pipeline.run(frame.image, list(options.boxes))
            elif proposed:
                result = pipeline.run(frame.image, proposed=ahead.take(n) if ahead is not None else None)
            else:  # between full proposal frames: propose only around the signs being followed
                result = pipeline.run(frame.image, windows=tracker.search_windows(frame.index))
            tracked = tracker.update(result.detections, frame.index, names)
            t_out = time.perf_counter()
            if sinks.jsonl:
                sinks.jsonl.write(_record(frame, tracked, proposed, result.ms.to_dict(), len(result.unconfirmed)))
            if sinks.snapshots:
                for t in tracked:
                    if t.new:
                        sinks.snapshots.write(frame.image, frame.index, t.detection.box, t.label, t.detection.prediction.score)
            keep_going = True
            if sinks.draws:
                fps = 1000.0 / max(np.median(summary.frame_ms[-30:]), 1e-9) if summary.frame_ms else 0.0
                image = annotate(frame.image, tracked, status_line(fps, result.ms.to_dict(), len(tracked)))
                if sinks.video:
                    sinks.video.write(image)
                if sinks.board:
                    sinks.board.publish(image, {"frame": frame.index, "fps": fps, "detections": [
                        {"label": t.label, "score": t.detection.prediction.score, "box": list(t.detection.box), "track": t.track}
                        for t in tracked]})
                if sinks.window:
                    keep_going = sinks.window.show(image)
            summary.per_class.update(t.label for t in tracked)
            summary.unconfirmed += len(result.unconfirmed)
            now = time.perf_counter()
            stages = {"read": 1000 * (got - last), **result.ms.to_dict(), "output": 1000 * (now - t_out)}
            for k, v in stages.items():
                summary.stage_ms.setdefault(k, []).append(v)
            summary.frame_ms.append(1000 * (now - last))
            summary.frames += 1
            if options.fps_cap:  # not faster than the cap: wait for this frame's slot
                time.sleep(max(0.0, start + summary.frames / options.fps_cap - time.perf_counter()))
            last = time.perf_counter()
            if not keep_going:
                summary.reason = "q pressed"
                break
            if options.max_frames and summary.frames >= options.max_frames:
                summary.reason = f"--frames {options.max_frames}"
                break
        if lost is not None and summary.reason == "end of source":
            raise lost
    except KeyboardInterrupt:
        summary.reason = "interrupted"
    except SourceError as err:
        summary.reason, summary.error = "source lost", str(err)
    finally:
        if ahead is not None:
            ahead.close()
        reader.close()
        sinks.close()
        summary.seconds = time.perf_counter() - start
        summary.dropped += reader.dropped
        summary.tracks = tracker.created
        summary.snapshots = sinks.snapshots.count if sinks.snapshots else 0
    return summary
