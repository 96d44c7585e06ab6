"""Follow signs from frame to frame: steady labels (``--smooth N``) and cheap frames (``--detect-every K``).

Detections are matched by IoU to where each track's sign should be by now (its last box moved by
its velocity), greedily, surest first. A track reports the class that won the vote over its last
N detections (a tie keeps the label it had), so one misread frame in five does not flicker the
label. Between two full proposal frames the pipeline proposes only in a window around each
track's predicted box (``search_windows``), with the cues of the sign's colour: that follows a sign
as it grows and drifts.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.classifier import Detection
from runtime.pipeline import GIVEN, Window
from runtime.roi import Box, iou_matrix

MATCH_IOU = 0.3


@dataclass
class Track:
    id: int
    box: Box
    last_frame: int
    votes: deque[int]
    class_id: int
    velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # box change per frame
    hits: int = 1
    colour: str | None = None  # the colour of the cue that found it last (None: a given box)


@dataclass(frozen=True)
class Tracked:
    """A detection as the demo reports it: its track, the track's voted class, and whether the track is new."""

    detection: Detection
    track: int
    class_id: int
    label: str
    new: bool


@dataclass
class Tracker:
    window: int = 1  # --smooth N: the vote runs over a track's last N detections (1: no smoothing)
    max_missing: int = 2  # frames a track survives without a detection (tuned on a gtsdb-train drive video)
    match_iou: float = MATCH_IOU
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 0

    def update(self, detections: Sequence[Detection], frame: int, class_names: Sequence[str]) -> list[Tracked]:
        """Match this frame's detections to the tracks; return them with their track's voted label."""
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.max_missing]
        out: list[Tracked] = []
        free = set(range(len(self.tracks)))
        ious = iou_matrix([d.box for d in detections], self._predicted(frame)) if self.tracks else None
        for i, det in enumerate(detections):  # detections come surest first
            best = -1
            if ious is not None and free:
                cand = [j for j in free if ious[i, j] >= self.match_iou]
                best = max(cand, key=lambda j: ious[i, j]) if cand else -1
            cls = det.prediction.class_id
            colour = det.proposal.colour if det.proposal is not None and det.proposal.cue != GIVEN else None
            if best < 0:
                track = Track(self._next_id, det.box, frame, deque([cls], maxlen=self.window), cls, colour=colour)
                self._next_id += 1
                self.tracks.append(track)
                new = True
            else:
                free.discard(best)
                track = self.tracks[best]
                gap = max(1, frame - track.last_frame)
                track.velocity = tuple((b - a) / gap for a, b in zip(track.box, det.box))  # type: ignore[assignment]
                track.box, track.last_frame, track.colour = det.box, frame, colour
                track.votes.append(cls)
                track.hits += 1
                track.class_id = self._vote(track)
                new = False
            out.append(Tracked(det, track.id, track.class_id, class_names[track.class_id], new))
        return out

    @property
    def created(self) -> int:
        """How many tracks (physical signs, as far as matching can tell) were started."""
        return self._next_id

    @staticmethod
    def _vote(track: Track) -> int:
        counts = Counter(track.votes)
        top = max(counts.values())
        if counts.get(track.class_id, 0) == top:
            return track.class_id  # a tie keeps the label the track already has
        return max(counts, key=lambda c: counts[c])

    def _predicted(self, frame: int) -> list[tuple[float, float, float, float]]:
        out = []
        for t in self.tracks:
            gap = frame - t.last_frame
            x1, y1, x2, y2 = (v + dv * gap for v, dv in zip(t.box, t.velocity))
            out.append((x1, y1, x2, y2))
        return out

    def predicted_boxes(self, frame: int, grow: float = 0.0) -> list[Box]:
        """Where each live track's sign should be in ``frame`` (its velocity applied), grown by ``grow`` a side."""
        boxes = []
        for x1, y1, x2, y2 in self._predicted(frame):
            w, h = (x2 - x1) * grow, (y2 - y1) * grow
            boxes.append((int(np.floor(x1 - w)), int(np.floor(y1 - h)), int(np.ceil(x2 + w)), int(np.ceil(y2 + h))))
        return boxes

    def search_windows(self, frame: int, grow: float = 1.6, same_colour: bool = True) -> list[Window]:
        """Windows to propose in for ``frame``: each track's predicted box grown by ``grow`` of its side on every side
        (room for a sign that moved or grew more than its velocity said), searched with the cues of the colour that
        found the sign (``same_colour``; else every cue). 1.6 was chosen on a gtsdb-train drive video with
        --detect-every 3: F1 0.717 at 0.8, 0.733 at 1.2, 0.737 at 1.6, 0.740 at 2.0 (0.747 proposing every frame),
        at 8 proposals a window and every cue."""
        colours = [t.colour if same_colour else None for t in self.tracks]
        return [Window(box, colour) for box, colour in zip(self.predicted_boxes(frame, grow), colours)]
