"""Frames between full detections that read nothing: signs carried by their tracks (``--between carry``)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.classifier import Detection, Prediction
from runtime.pipeline import PROFILES, FrameCost, FrameResult, Proposed, StageTimes
from runtime.proposals import Proposal
from runtime.stream import Frame, FrameStream, StreamOptions
from runtime.tracking import CARRIED, Tracker

NAMES = ["c0", "c1"]


def _det(box, cls=1, score=0.97):
    return Detection(box, Prediction(cls, NAMES[cls], score, ()), Proposal(box, "map", 0.8))


def _scene(offset: tuple[int, int], sign: bool = True, seed: int = 0) -> np.ndarray:
    """A 240x320 noisy frame with a textured 40-pixel sign at (100, 80) moved by ``offset``."""
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 110, (240, 320, 3)).astype(np.uint8)
    if sign:
        pattern = np.random.default_rng(42).integers(0, 255, (20, 20, 3)).astype(np.uint8)
        x, y = 100 + offset[0], 80 + offset[1]
        img[y:y + 40, x:x + 40] = np.kron(pattern, np.ones((2, 2, 1), np.uint8))
    return img


def test_a_sign_is_carried_to_where_it_moved_and_dropped_where_it_is_gone():
    t = Tracker()
    t.update([_det((100, 80, 140, 120))], 0, NAMES)
    t.remember(_scene((0, 0)), 0)
    carried, work = t.carried(_scene((12, 6), seed=1), 1, 0, NAMES)
    assert len(carried) == 1 and work > 0
    box = carried[0].detection.box
    assert np.abs(np.subtract(box, (112, 86, 152, 126))).max() <= 2  # half-size matching: within 2 frame pixels
    assert carried[0].detection.proposal.cue == CARRIED and carried[0].label == "c1" and not carried[0].new
    assert carried[0].detection.prediction.score == pytest.approx(0.97)
    assert t.carried(_scene((12, 6), sign=False, seed=1), 1, 0, NAMES)[0] == []  # nothing like it there: not shown
    assert t.carried(_scene((12, 6), seed=1), 3, 2, NAMES)[0] == []  # not detected on the last full frame: not carried
    gone = Tracker()
    gone.update([_det((100, 80, 140, 120))], 0, NAMES)
    gone.remember(_scene((0, 0)), 0)
    gone.tracks[0].velocity = (-200.0, -200.0, -200.0, -200.0)  # predicted far above and left of the frame
    assert gone.carried(_scene((0, 0), seed=1), 1, 0, NAMES) == ([], 0)  # nothing searched, nothing found
    flat = Tracker()
    flat.update([_det((100, 80, 140, 120))], 0, NAMES)
    flat.remember(np.full((240, 320, 3), 128, np.uint8), 0)
    assert flat.carried(np.full((240, 320, 3), 128, np.uint8), 1, 0, NAMES) == ([], 0)  # a flat look is not looked for


def test_a_detection_off_its_predicted_box_is_the_same_sign_when_near_and_of_its_class():
    t = Tracker()
    first = t.update([_det((0, 0, 20, 20), 0)], 0, NAMES)[0]
    moved = t.update([_det((25, 0, 45, 20), 0)], 2, NAMES)[0]  # no overlap, 1.25 sides away two frames on
    assert moved.track == first.track and not moved.new
    assert t.predicted_boxes(4) == [(50, 0, 70, 20)]  # its velocity now known
    other = t.update([_det((75, 0, 95, 20), 1)], 4, NAMES)[0]  # where it should be, but another sign's class
    assert other.new
    far = Tracker()
    far.update([_det((0, 0, 20, 20), 0)], 0, NAMES)
    assert far.update([_det((0, 60, 20, 80), 0)], 1, NAMES)[0].new  # 3 sides away in one frame
    grown = Tracker()
    grown.update([_det((0, 0, 20, 20), 0)], 0, NAMES)
    assert grown.update([_det((10, 10, 40, 40), 0)], 1, NAMES)[0].new is False  # IoU 0.08, but near and 1.5 its side
    assert grown.update([_det((0, 0, 90, 90), 0)], 2, NAMES)[0].new  # twice its side: another sign


class _Moving:
    """A pipeline stand-in that finds the scene's sign on every frame it is asked to read."""

    def __init__(self) -> None:
        import types

        self.classifier = types.SimpleNamespace(class_names=tuple(NAMES), macs_per_crop=1000)
        self.read: list[int] = []

    def propose(self, image, learned=True):
        return Proposed((), 0.0)

    def run(self, image, boxes=None, proposed=None, windows=None):
        n = int(image[0, 0, 1])  # the frame's number, written into its corner
        self.read.append(n)
        box = (100 + 4 * n, 80 + 2 * n, 140 + 4 * n, 120 + 2 * n)
        return FrameResult((_det(box),), (), (), StageTimes(0, 0, 0, 0, 0), cost=FrameCost(crops=1, macs_per_crop=1000))


def _frames(n: int):
    for i in range(n):
        img = _scene((4 * i, 2 * i), seed=i)
        img[0, 0] = (0, i, 0)
        yield Frame(img, i / 10, i)


@pytest.mark.parametrize("every", [2, 3])
def test_the_stream_reads_every_kth_frame_and_carries_the_signs_in_between(every):
    pipe = _Moving()
    out = list(FrameStream(pipe, StreamOptions(detect_every=every, between="carry", overlap=False)).run(_frames(9)))
    assert pipe.read == [i for i in range(9) if i % every == 0]
    assert [o.proposed for o in out] == [i % every == 0 for i in range(9)]
    for i, o in enumerate(out):
        assert len(o.tracked) == 1 and o.tracked[0].track == 0  # one sign, one track, every frame
        x1, y1 = o.tracked[0].detection.box[:2]
        assert abs(x1 - (100 + 4 * i)) <= 2 and abs(y1 - (80 + 2 * i)) <= 2
        if not o.proposed:
            assert o.cost.crops == 0 and o.cost.track_macs > 0 and o.cost.macs == o.cost.track_macs
            assert o.result.detections == (o.tracked[0].detection,)


def test_between_is_checked_and_the_pi_profile_carries():
    with pytest.raises(ValueError, match="between"):
        FrameStream(_Moving(), StreamOptions(between="hold"))
    assert PROFILES["pi"].between == "carry" and PROFILES["pi"].detect_every == 2
    assert PROFILES["full"].between == "windows"
