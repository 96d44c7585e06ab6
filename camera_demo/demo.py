"""The demo loop: frames from a source through the runtime's frame stream, to the window and the outputs.

The source is read on its own thread (decoding overlaps inference; OpenCV lets go of the GIL). A
file or folder is read ahead a couple of frames and never dropped; a live camera keeps only its
newest frame, and the frames it had to drop are counted. Everything between a frame and its signs
(proposals ahead, detect every K, tracking) is ``runtime.stream.FrameStream``'s.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from camera_demo.display import Window
from camera_demo.draw import annotate, status_line
from camera_demo.outputs import JsonlWriter, SnapshotWriter, VideoSaver
from camera_demo.server import FrameBoard
from camera_demo.sources import Source, SourceError, frames
from camera_demo.stats import Stats
from runtime.machine import describe_cpu
from runtime.pipeline import FramePipeline
from runtime.stream import Frame, FrameStream, StreamOptions, StreamResult

STAGES = ("proposals", "crop+preprocess", "invoke", "post", "second look", "total", "output")


@dataclass(frozen=True)
class DemoOptions:
    stream: StreamOptions = field(default_factory=StreamOptions)
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
    """What a run did, in memory that does not grow with its length (``camera_demo.stats``)."""

    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    reason: str = "end of source"
    error: str | None = None
    frame_ms: Stats = field(default_factory=Stats)
    stage_ms: dict[str, Stats] = field(default_factory=lambda: {k: Stats() for k in STAGES})
    crops: Stats = field(default_factory=Stats)  # crops classified a frame, the second look's included
    gmacs: Stats = field(default_factory=Stats)  # G multiply-accumulates a frame (classifier and sign map)
    macs_known: bool = True  # every frame's build said its MACs per crop
    per_class: Counter[str] = field(default_factory=Counter)
    tracks: int = 0
    unconfirmed: int = 0  # detections the pipeline's second look dropped, over the run
    snapshots: int = 0
    skipped: tuple[int, list[str]] = (0, [])  # unreadable files of a folder source: how many, the first few
    cpu: str = field(default_factory=describe_cpu)  # the frame rates mean little without it

    def record(self, out: StreamResult, frame_ms: float, output_ms: float) -> None:
        self.frames += 1
        self.frame_ms.add(frame_ms)
        for k, v in {**out.result.ms.to_dict(), "output": output_ms}.items():
            self.stage_ms[k].add(v)
        cost = out.cost
        self.crops.add(cost.crops + cost.second_look_crops)
        self.gmacs.add(cost.macs / 1e9)
        self.macs_known &= cost.macs_per_crop > 0
        self.per_class.update(t.label for t in out.tracked)
        self.unconfirmed += len(out.result.unconfirmed)

    def fps(self, pct: float = 50) -> float:
        """Frames per second at the median (50) or at a low percentile (5: all but the slowest 5 % of frames)."""
        if not self.frame_ms.count:
            return 0.0
        return 1000.0 / max(self.frame_ms.percentile(100 - pct), 1e-9)

    def medians(self) -> dict[str, float]:
        return {k: s.percentile(50) for k, s in self.stage_ms.items() if s.count}

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "seconds": round(self.seconds, 3),
                "fps_overall": round(self.frames / self.seconds, 2) if self.seconds else 0.0, "fps_median": round(self.fps(50), 2),
                "fps_p5": round(self.fps(5), 2), "ms": {k: round(v, 3) for k, v in self.medians().items()},
                "crops_per_frame": round(self.crops.mean, 2),
                "gmacs_per_frame": round(self.gmacs.mean, 4) if self.macs_known else None,
                "detections_per_class": dict(self.per_class.most_common()), "tracks": self.tracks,
                "unconfirmed": self.unconfirmed, "frames_dropped": self.dropped, "files_skipped": self.skipped[0],
                "snapshots": self.snapshots, "stopped_by": self.reason, "error": self.error, "cpu": self.cpu}

    def format(self) -> str:
        ms = " ".join(f"{k} {v:.2f}" for k, v in self.medians().items())
        classes = ", ".join(f"{name} {n}" for name, n in self.per_class.most_common()) or "none"
        overall = self.frames / self.seconds if self.seconds else 0.0
        macs = f"{self.gmacs.mean:.3f} G MACs" if self.macs_known else "MACs unknown (re-export the build)"
        skipped = (f"\nskipped {self.skipped[0]} unreadable files: {', '.join(self.skipped[1])}"
                   + (" ..." if self.skipped[0] > len(self.skipped[1]) else "")) if self.skipped[0] else ""
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.reason}): {overall:.1f} fps overall; per frame "
                f"median {self.fps(50):.1f}, 5th percentile {self.fps(5):.1f}; frames dropped {self.dropped}; on {self.cpu}\n"
                f"a frame's work: {self.crops.mean:.1f} crops classified, {macs}\n"
                f"median ms per frame: {ms}\n"
                f"detections per class ({self.tracks} tracks; the second look dropped {self.unconfirmed} detections): "
                f"{classes}{skipped}")


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


def _record(out: StreamResult) -> dict[str, Any]:
    frame, result = out.frame, out.result
    return {"frame": frame.index, "timestamp": round(frame.timestamp, 4), "proposed": out.proposed,
            "detections": [{"box": list(t.detection.box), "class_id": t.class_id, "label": t.label,
                            "score": round(t.detection.prediction.score, 4), "track": t.track,
                            "frame_class_id": t.detection.prediction.class_id} for t in out.tracked],
            "unconfirmed": len(result.unconfirmed), "cost": out.cost.to_dict(),
            "ms": {k: round(v, 3) for k, v in result.ms.to_dict().items()}}


def _write(out: StreamResult, sinks: Sinks, fps: float) -> bool:
    """The frame's outputs; False when the window asks to stop (q/Esc)."""
    frame, tracked = out.frame, out.tracked
    if sinks.jsonl:
        sinks.jsonl.write(_record(out))
    if sinks.snapshots:
        for t in tracked:
            if t.new:
                sinks.snapshots.write(frame.image, frame.index, t.detection.box, t.label, t.detection.prediction.score)
    if not sinks.draws:
        return True
    image = annotate(frame.image, tracked, status_line(fps, out.result.ms.to_dict(), len(tracked)))
    if sinks.video:
        sinks.video.write(image)
    if sinks.board:
        sinks.board.publish(image, {"frame": frame.index, "fps": fps, "detections": [
            {"label": t.label, "score": t.detection.prediction.score, "box": list(t.detection.box), "track": t.track}
            for t in tracked]})
    return sinks.window.show(image) if sinks.window else True


def run_demo(source: Source, pipeline: FramePipeline, options: DemoOptions, sinks: Sinks,
             log: Callable[[str], None] = print, on_frame: Callable[[int], object] | None = None) -> Summary:
    """Run until the source ends, ``max_frames``, q/Esc in the window, or Ctrl-C / SIGTERM (KeyboardInterrupt).

    ``on_frame`` is called with the count of frames done after each one (``bench.soak`` watches the process with it).

    The outputs are closed on every way out. A source lost mid-stream ends the run with
    ``summary.error`` set; everything it wrote until then stays readable.
    """
    summary = Summary()
    stream = FrameStream(pipeline, options.stream)
    reader = ReadAhead(source, options.loop)
    recent: deque[float] = deque(maxlen=30)  # the last frames' milliseconds, for the frame rate drawn on screen
    expected: int | None = None
    start = last = time.perf_counter()
    try:
        for out in stream.run(reader):
            index = out.frame.index
            if expected is not None and index > expected:
                summary.dropped += index - expected  # gaps in the source's own frame numbers
            expected = index + 1
            t_out = time.perf_counter()
            keep_going = _write(out, sinks, 1000.0 / max(sorted(recent)[len(recent) // 2], 1e-9) if recent else 0.0)
            now = time.perf_counter()
            summary.record(out, 1000 * (now - last), 1000 * (now - t_out))
            recent.append(1000 * (now - last))
            if on_frame is not None:
                on_frame(summary.frames)
            if options.fps_cap:  # not faster than the cap: wait for this frame's slot
                time.sleep(max(0.0, start + summary.frames / options.fps_cap - time.perf_counter()))
            last = time.perf_counter()
            if not keep_going:
                summary.reason = "q pressed"
                break
            if options.max_frames and summary.frames >= options.max_frames:
                summary.reason = f"--max-frames {options.max_frames}"
                break
    except KeyboardInterrupt:
        summary.reason = "interrupted"
    except SourceError as err:
        summary.reason, summary.error = "source lost", str(err)
    finally:
        reader.close()
        sinks.close()
        summary.seconds = time.perf_counter() - start
        summary.dropped += reader.dropped
        summary.tracks = stream.tracker.created
        summary.snapshots = sinks.snapshots.count if sinks.snapshots else 0
        skipped = getattr(source, "skipped", None)
        if skipped:
            summary.skipped = (len(skipped), [str(p) for p in skipped[:3]])
    return summary
