"""Checks on the real datasets (../shared/data or $SIGNKIT_SHARED_DATA); skipped when they are absent."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.annotations import read_gtsdb
from runtime.proposals import propose
from tests.fixtures import requires_shared
from train.data import detect_format, load_dataset, track_split

pytestmark = pytest.mark.realdata


def test_gtsrb_training_set_loads_with_tracks():
    root = requires_shared("gtsrb")
    assert detect_format(root) == "gtsrb-kaggle"
    split = load_dataset(root, size=32, progress=False)
    assert len(split) == 39209 and split.num_classes == 43 and split.skipped == 0
    assert np.bincount(split.labels).min() == 210 and np.bincount(split.labels).max() == 2250
    assert len(np.unique(split.tracks)) == 1307
    tr, va = track_split(split.labels, split.tracks, 0.1, 0)
    assert not set(split.tracks[tr]) & set(split.tracks[va])
    assert set(np.unique(split.labels[va])) == set(range(43))  # every class validated
    assert 0.09 < len(va) / len(split) < 0.12


def test_gtsdb_frames_and_annotations():
    root = requires_shared("gtsdb")
    gt = read_gtsdb(root / "gt.txt")
    assert sum(map(len, gt.values())) == 91 and len(gt) == 60
    frame = cv2.imread(str(root / "00001.jpg"))
    assert frame.shape == (800, 1360, 3)
    props = propose(frame)
    assert props and all(0 <= p.box[0] < p.box[2] <= 1360 and 0 <= p.box[1] < p.box[3] <= 800 for p in props)


def test_packaged_proposal_ranker_finds_most_signs_of_the_scoring_frames():
    """Fitted on gtsdb-train (300 frames), it is scored on the 60 gtsdb frames, which fitted nothing."""
    from runtime.annotations import frame_files, frames_fitted
    from runtime.proposals import ProposalConfig, default_ranker
    from train.frames.ranker import proposal_recall

    fitted, scored = requires_shared("gtsdb-train"), requires_shared("gtsdb")
    ranker = default_ranker()
    assert len(frames_fitted(ranker.fitted_on, fitted)) == 300 and not frames_fitted(ranker.fitted_on, scored)
    files, gt = frame_files(scored)
    frames = {s: cv2.imread(str(p)) for s, p in files.items()}
    recall, per_frame = proposal_recall(frames, gt, ProposalConfig(), ranker)
    assert len(frames) == 60 and per_frame <= ProposalConfig().max_proposals
    assert recall > 0.8  # 0.857 when it was fitted
