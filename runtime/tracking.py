"""Follow signs from frame to frame: steady labels (``--smooth N``) and cheap frames (``--detect-every K``).

Detections are matched by IoU to where each track's sign should be by now (its last box moved by
its velocity), greedily, surest first. A track reports the class that won the vote over its last
N detections (a tie keeps the label it had), so one misread frame in five does not flicker the
label. Between two full proposal frames the pipeline either proposes only in a window around each
track's predicted box (``search_windows``), with the cues of the sign's colour, or classifies nothing
and finds each sign of the last full frame again by its look, near its predicted box (``carried``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from runtime.classifier import Detection
from runtime.pipeline import GIVEN, Window
from runtime.proposals import Proposal
from runtime.roi import Box, iou_matrix

MATCH_IOU = 0.3
NEAR = 1.0  # a detection of a track's class this many sides a frame from its predicted box, or less, is the same sign
NEAR_SIZE = 1.5
CARRY_SEARCH = 0.75  # carried signs are looked for this many sides around where their track says they are
CARRY_MATCH = 0.5  # the least normalised cross-correlation of a sign found again
MIN_PATCH = 6  # half-size pixels: a smaller sign's look is too little to find it by
CARRIED = "carried"  # the cue of a sign shown where its track says it is, on a frame where nothing was read


def _half_grey(frame_bgr: np.ndarray) -> np.ndarray:
    """The frame at half size, grey: where a sign's look is kept and looked for."""
    return cv2.cvtColor(cv2.resize(frame_bgr, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)


def _near(box: Sequence[float], predicted: Sequence[float], gap: int) -> float | None:
    """How far ``box``'s centre is from ``predicted``'s, in sides, when it is near enough to be the same sign ``gap``
    frames on (within NEAR sides a frame, and a side within NEAR_SIZE times the other); else None."""
    side, pside = max(box[2] - box[0], box[3] - box[1]), max(predicted[2] - predicted[0], predicted[3] - predicted[1])
    if side <= 0 or pside <= 0 or not 1 / NEAR_SIZE <= side / pside <= NEAR_SIZE:
        return None
    d = float(np.hypot((box[0] + box[2] - predicted[0] - predicted[2]) / 2, (box[1] + box[3] - predicted[1] - predicted[3]) / 2))
    d /= (side + pside) / 2
    return d if d <= NEAR * max(gap, 1) else None


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
    detection: Detection | None = None  # the last one
    patch: np.ndarray | None = None  # its box at half size, grey: what ``carried`` looks for (``remember``)
    carried_box: tuple[float, float, float, float] | None = None  # where ``carried`` found it last, on ...
    carried_frame: int = -1  # ... this frame


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
        predicted = self._predicted(frame)
        ious = iou_matrix([d.box for d in detections], predicted) if self.tracks else None
        for i, det in enumerate(detections):  # detections come surest first
            best = -1
            cls = det.prediction.class_id
            if ious is not None and free:
                cand = [j for j in free if ious[i, j] >= self.match_iou]
                if cand:
                    best = max(cand, key=lambda j: ious[i, j])
                else:  # a sign that moved off its predicted box (no velocity yet, or a frame or two between)
                    near = [(d, j) for j in free if self.tracks[j].class_id == cls
                            and (d := _near(det.box, predicted[j], frame - self.tracks[j].last_frame)) is not None]
                    best = min(near)[1] if near else -1
            colour = det.proposal.colour if det.proposal is not None and det.proposal.cue != GIVEN else None
            if best < 0:
                track = Track(self._next_id, det.box, frame, deque([cls], maxlen=self.window), cls, colour=colour,
                              detection=det)
                self._next_id += 1
                self.tracks.append(track)
                new = True
            else:
                free.discard(best)
                track = self.tracks[best]
                gap = max(1, frame - track.last_frame)
                track.velocity = tuple((b - a) / gap for a, b in zip(track.box, det.box))  # type: ignore[assignment]
                track.box, track.last_frame, track.colour, track.detection = det.box, frame, colour, det
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

    def remember(self, frame_bgr: np.ndarray, frame: int) -> None:
        """Keep what each sign detected on ``frame`` looks like (its box at half size, grey), for ``carried``."""
        grey = None
        for track in self.tracks:
            if track.last_frame == frame:
                if grey is None:
                    grey = _half_grey(frame_bgr)
                x1, y1, x2, y2 = (round(v / 2) for v in track.box)
                patch = grey[max(0, y1):y2, max(0, x1):x2]
                # a flat look has no correlation to be found by (OpenCV's is undefined for it)
                track.patch = patch.copy() if min(patch.shape) >= MIN_PATCH and float(patch.std()) >= 1.0 else None

    def carried(self, frame_bgr: np.ndarray, frame: int, since: int, class_names: Sequence[str]) -> tuple[list[Tracked], int]:
        """The signs detected on frame ``since`` (the last full detection) found again in ``frame`` without reading
        anything: each one's look (``remember``) matched (normalised cross-correlation, at half size) in a window
        around where its track says it is now, kept with its track's label and its last read's score when the match
        is good (>= CARRY_MATCH). Also the multiply-adds the matching took. Tracks keep their detections."""
        h, w = frame_bgr.shape[:2]
        grey = _half_grey(frame_bgr)
        out, work = [], 0
        for track, predicted in zip(self.tracks, self._predicted(frame)):
            if track.last_frame != since or track.detection is None or track.patch is None:
                continue
            ph, pw = track.patch.shape
            cx, cy = ((predicted[0] + predicted[2]) / 4, (predicted[1] + predicted[3]) / 4)  # half-size pixels
            if track.carried_frame == frame - 1 and track.carried_box is not None:  # where it was found a frame ago
                cb = track.carried_box
                cx, cy = (cb[0] + cb[2]) / 4 + track.velocity[0] / 2, (cb[1] + cb[3]) / 4 + track.velocity[1] / 2
            sx, sy = round(cx - pw / 2 - CARRY_SEARCH * pw), round(cy - ph / 2 - CARRY_SEARCH * ph)
            x0, y0 = max(0, sx), max(0, sy)
            x2, y2 = max(0, sx + round(pw * (1 + 2 * CARRY_SEARCH))), max(0, sy + round(ph * (1 + 2 * CARRY_SEARCH)))
            window = grey[y0:y2, x0:x2]  # (an end left negative would count from the far edge)
            if window.shape[0] < ph or window.shape[1] < pw:
                continue  # gone out of the frame
            scores = cv2.matchTemplate(window, track.patch, cv2.TM_CCOEFF_NORMED)
            work += scores.size * track.patch.size
            _, best, _, (bx, by) = cv2.minMaxLoc(scores)
            if best < CARRY_MATCH:
                continue
            x1, y1 = 2 * (x0 + bx), 2 * (y0 + by)
            box = (max(0, x1), max(0, y1), min(w, x1 + 2 * pw), min(h, y1 + 2 * ph))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            track.carried_box, track.carried_frame = tuple(float(v) for v in box), frame  # type: ignore[assignment]
            last = track.detection
            det = Detection(box, last.prediction, Proposal(box, CARRIED, last.prediction.score))
            out.append(Tracked(det, track.id, track.class_id, class_names[track.class_id], False))
        return sorted(out, key=lambda t: -t.detection.prediction.score), work

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
