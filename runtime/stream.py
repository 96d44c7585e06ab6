"""A stream of frames through the frame pipeline: what a camera loop and the road-frame benchmark both run.

    for out in FrameStream(pipeline, StreamOptions(detect_every=3, smooth=5)).run(frames):
        draw(out.frame.image, out.tracked)

It owns the concurrency and the state between frames, so the loop that uses it stays flat:

* **look-ahead**: the proposal stage of a frame still to come runs on a thread of its own while this
  one is classified (``ProposalsAhead``); a camera is read one frame ahead (no frame is held back
  from the screen), a file up to the next full-proposal frame;
* **detect every K**: full proposals on every K-th frame, and in between either only windows around
  the signs being followed (``Tracker.search_windows``, ``between="windows"``) or nothing classified,
  each sign of the last full frame found again by its look (``Tracker.carried``, ``between="carry"``);
* **tracking**: every frame's detections matched to the signs of the frames before (steady labels,
  ``--smooth N``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from runtime.classifier import check_frame
from runtime.pipeline import BETWEEN, FrameCost, FramePipeline, FrameResult, ProposalsAhead, StageTimes
from runtime.roi import Box
from runtime.tracking import Tracked, Tracker


@dataclass(frozen=True)
class Frame:
    """A frame as a source hands it over."""

    image: np.ndarray  # uint8 HxWx3 BGR
    timestamp: float = 0.0  # seconds, the source's own clock (file position, sensor time) where it has one
    index: int = 0  # the source's frame number: a gap means frames were dropped before they reached us
    name: str = ""  # e.g. the file it came from


@dataclass(frozen=True)
class StreamOptions:
    boxes: tuple[Box, ...] | None = None  # fixed ROIs in every frame; None: find the signs (proposals)
    detect_every: int = 1  # full proposals every K-th frame; in between, what ``between`` says
    between: str = "windows"  # BETWEEN: windows around the signs followed, or the last full frame's signs carried
    smooth: int = 1  # a track's label is the vote of its last N detections
    overlap: bool = True  # propose a frame to come on another thread while this one is classified
    live: bool = False  # a camera or stream: read one frame ahead only


@dataclass(frozen=True)
class StreamResult:
    frame: Frame
    result: FrameResult
    tracked: tuple[Tracked, ...]
    proposed: bool  # full proposals ran on this frame (else fixed boxes or windows around the tracks)

    @property
    def cost(self) -> FrameCost:
        return self.result.cost


class FrameStream:
    """One pipeline run over a stream of frames; not thread-safe (one stream per loop)."""

    def __init__(self, pipeline: FramePipeline, options: StreamOptions = StreamOptions()) -> None:
        if options.detect_every < 1 or options.smooth < 1:
            raise ValueError("detect_every and smooth must be at least 1")
        if options.between not in BETWEEN:
            raise ValueError(f"between must be one of {', '.join(BETWEEN)}, not {options.between!r}")
        self.pipeline = pipeline
        self.options = options
        # carrying, a track lives as many full detections without one as it would frames otherwise
        self.tracker = Tracker(window=options.smooth, max_missing=Tracker.max_missing * (
            options.detect_every if options.between == "carry" else 1))

    def _full(self, n: int) -> bool:
        return self.options.boxes is None and n % self.options.detect_every == 0

    def run(self, frames: Iterable[Frame]) -> Iterator[StreamResult]:
        """Each frame's result, in order, as soon as it is made. An error of the frames' iterator is raised once the
        frames it did deliver have been processed."""
        opts, pipe = self.options, self.pipeline
        ahead = ProposalsAhead(pipe) if opts.overlap and opts.boxes is None else None
        # Frames read ahead of the one being processed; a full-proposal frame among them starts its proposals at once.
        depth = opts.detect_every if ahead is not None and not opts.live else 1
        source = iter(frames)
        waiting: deque[tuple[int, Frame]] = deque()
        failed: BaseException | None = None
        pulled = 0

        def fill() -> None:
            nonlocal pulled, failed
            while failed is None and len(waiting) < depth:
                try:
                    frame = next(source)
                except StopIteration:
                    return
                except Exception as err:  # noqa: BLE001 - raised once the frames already read are processed
                    failed = err
                    return
                if ahead is not None and self._full(pulled):
                    ahead.submit(pulled, frame.image)
                waiting.append((pulled, frame))
                pulled += 1

        names = pipe.classifier.class_names
        last_full = 0  # the index of the last frame with full proposals
        try:
            fill()
            while waiting:
                n, frame = waiting.popleft()
                fill()
                full = self._full(n)
                if opts.boxes is not None:
                    result = pipe.run(frame.image, list(opts.boxes))
                elif full:
                    result = pipe.run(frame.image, proposed=ahead.take(n) if ahead is not None else None)
                    last_full = frame.index
                elif opts.between == "carry":
                    yield self._carried(frame, last_full)
                    continue
                else:
                    result = pipe.run(frame.image, windows=self.tracker.search_windows(frame.index))
                tracked = self.tracker.update(result.detections, frame.index, names)
                if full and opts.between == "carry" and opts.detect_every > 1:
                    self.tracker.remember(frame.image, frame.index)
                yield StreamResult(frame, result, tuple(tracked), full)
            if failed is not None:
                raise failed
        finally:
            if ahead is not None:
                ahead.close()

    def _carried(self, frame: Frame, since: int) -> StreamResult:
        """A frame on which nothing is classified: the signs of frame ``since``, found again by their looks."""
        t0 = time.perf_counter()
        check_frame(frame.image)
        tracked, work = self.tracker.carried(frame.image, frame.index, since, self.pipeline.classifier.class_names)
        ms = 1000.0 * (time.perf_counter() - t0)
        result = FrameResult(tuple(t.detection for t in tracked), (), (), StageTimes(0.0, 0.0, 0.0, 0.0, ms),
                             cost=FrameCost(macs_per_crop=self.pipeline.classifier.macs_per_crop, track_macs=work))
        return StreamResult(frame, result, tuple(tracked), False)
