"""The proposal stage: candidates and their features, the fitted ranker, and python -m train.frames.ranker."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bench.gtsdb import frames_that_trained
from runtime.annotations import annotations_fingerprint, read_gtsdb
from runtime.errors import ConfigError
from runtime.pipeline import FramePipeline, Window, _even
from runtime.proposals import (
    FEATURES,
    ProposalConfig,
    Ranker,
    candidates,
    colour_maps,
    component_stats,
    default_ranker,
    propose,
    select,
    small_size,
)
from runtime.roi import iou_matrix
from tests import synth
from train.frames import ranker as fit_cmd


@pytest.fixture(scope="module")
def gtsdb_dir(tmp_path_factory):
    return synth.write_gtsdb(tmp_path_factory.mktemp("gtsdb"), frames=4)


def test_candidates_have_finite_features_and_boxes_inside_the_frame(gtsdb_dir):
    frame = cv2.imread(str(gtsdb_dir / "00000.jpg"))
    c = candidates(frame)
    assert len(c.cue) > 0 and c.features.shape == (len(c.cue), len(FEATURES)) and c.boxes.shape == (len(c.cue), 4)
    assert np.isfinite(c.features).all()
    h, w = frame.shape[:2]
    assert (c.boxes[:, 0] >= 0).all() and (c.boxes[:, 1] >= 0).all() and (c.boxes[:, 2] <= w).all() and (c.boxes[:, 3] <= h).all()
    assert (c.boxes[:, 2] > c.boxes[:, 0]).all() and (c.boxes[:, 3] > c.boxes[:, 1]).all()


def test_a_frame_downscaled_once_gives_the_same_proposals(gtsdb_dir):
    frame = cv2.imread(str(gtsdb_dir / "00000.jpg"))
    cfg = ProposalConfig()
    small = cv2.resize(frame, small_size(frame.shape, cfg), interpolation=cv2.INTER_AREA)
    ranker = default_ranker()
    assert propose(frame, cfg, ranker, small) == propose(frame, cfg, ranker)
    with pytest.raises(ValueError, match="small frame is"):
        candidates(frame, cfg, small[:-2])


def test_select_reserves_the_best_of_every_cue_and_keeps_the_order():
    # 100 candidates in score order: the first 90 from cue 0, then 10 from cue 2.
    cue = np.array([0] * 90 + [2] * 10)
    order = list(range(100))
    cfg = ProposalConfig(max_proposals=20, per_cue=3)
    keep = select(order, cue, cfg)
    assert len(keep) == 20 and keep == sorted(keep)  # best first, as NMS ordered them
    assert keep[-3:] == [90, 91, 92] and keep[:17] == list(range(17))  # cue 2's best three displace cue 0's tail
    assert select(order, cue, ProposalConfig(max_proposals=20, per_cue=0)) == list(range(20))
    assert select(order[:15], cue, cfg) == order[:15]  # fewer than the cap: all of them


def test_fit_logistic_separates_a_learnable_problem():
    rng = np.random.default_rng(0)
    x = np.hstack([np.ones((400, 1)), rng.normal(size=(400, 2))])
    y = (x[:, 1] - 2 * x[:, 2] + rng.normal(0, 0.3, 400) > 0).astype(float)
    w = fit_cmd.fit_logistic(x, y, l2=0.1)
    assert w[1] > 0 > w[2] and abs(w[2]) > abs(w[1])
    assert (((x @ w) > 0) == (y > 0)).mean() > 0.9


def test_the_ranker_fit_writes_and_the_ranker_proposes(gtsdb_dir, tmp_path, capsys):
    out = tmp_path / "ranker.json"
    assert fit_cmd.main(["--frames", str(gtsdb_dir), "--subset", "even", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "held-out frames of" in text and "proposal recall" in text and str(out) in text
    record = json.loads(out.read_text())
    assert record["features"] == list(FEATURES) and record["positives"] > 0
    assert record["fitted_on"] == [{"gt_sha256": annotations_fingerprint(gtsdb_dir), "frames": ["00000", "00002"]}]
    ranker = Ranker.load(out)
    assert set(ranker.weights) == {"red-hole", "blue-solid", "yellow-solid", "yellow-hole"}
    gt = read_gtsdb(gtsdb_dir / "gt.txt")
    for stem in ("00001", "00003"):  # held out
        props = propose(cv2.imread(str(gtsdb_dir / f"{stem}.jpg")), ProposalConfig(), ranker)
        assert all(0.0 <= p.score <= 1.0 for p in props)
        assert (iou_matrix([a.box for a in gt[stem]], [p.box for p in props]).max(axis=1) >= 0.5).all()


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not a proposal ranker"),
    (json.dumps({"features": ["bias"], "weights": {"red-hole": [0.0]}}), "fitted on other features"),
])
def test_a_broken_ranker_file_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "ranker.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        Ranker.load(path)
    assert "\n" not in str(err.value) and "python -m train.frames.ranker" in str(err.value)


def test_the_ranker_fit_without_signs_to_learn_from(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "00000.jpg"), np.full((200, 300, 3), 120, np.uint8))
    (folder / "gt.txt").write_text("")
    assert fit_cmd.main(["--frames", str(folder), "--out", str(tmp_path / "r.json"), "--quiet"]) == 1
    assert "no candidate" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_bench_leaves_out_frames_that_trained_only_on_the_same_frame_set(gtsdb_dir):
    here = annotations_fingerprint(gtsdb_dir)
    meta = {"background_fitted_on": [{"gt_sha256": here, "frames": ["00000"]}]}
    ranker = Ranker({}, ({"gt_sha256": here, "frames": ["00002"]},))
    assert frames_that_trained(meta, gtsdb_dir, ranker) == {"00000", "00002"}
    assert frames_that_trained(meta, gtsdb_dir, None) == {"00000"}
    other = {"background_fitted_on": [{"gt_sha256": "0" * 16, "frames": ["00000"]}]}  # another frame set, same names
    assert frames_that_trained(other, gtsdb_dir, Ranker({}, ({"gt_sha256": "f" * 16, "frames": ["00002"]},))) == set()
    old = {"background_frames": ["00000"], "background_frames_gt_sha256": here}  # a build exported before, one folder
    assert frames_that_trained(old, gtsdb_dir, None) == {"00000"}


def test_colour_maps_are_the_chromaticity_formula_byte_for_byte():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    noise[0, :8] = [[0, 0, 0], [255, 255, 255], [0, 0, 255], [255, 0, 0], [0, 255, 255], [1, 0, 0], [0, 0, 1], [254, 255, 0]]
    levels = np.arange(256, dtype=np.uint8)  # every (b, g) pair, with r 0 and 255: float rounding has nowhere to hide
    pairs = np.stack(np.meshgrid(levels, levels, indexing="ij"), axis=-1)
    every = np.concatenate([np.dstack([pairs, np.full((256, 256, 1), r, np.uint8)]) for r in (0, 255)])
    for image, gain in [(noise, 1.0), (noise, 4.0), (noise, 6.5), (every, 4.0), (every, 2.5)]:
        f = image.astype(np.float32)
        b, g, r = f[..., 0], f[..., 1], f[..., 2]
        k = gain * 255.0 / (b + g + r + 1.0)
        want = {"red": np.minimum(r - g, r - b) * k, "blue": (b - r) * k, "yellow": np.minimum(r - b, g - b) * k}
        got = colour_maps(image, gain)
        for name, m in want.items():
            assert got[name].dtype == np.uint8 and got[name].shape == image.shape[:2]
            np.testing.assert_array_equal(got[name], np.clip(m, 0, 255).astype(np.uint8), err_msg=f"{name} at gain {gain}")


@pytest.mark.parametrize("spacing", [2, 7])  # 90,000 isolated pixels (more labels than 16 bits hold), and 5,184
def test_component_stats_agree_with_32_bit_labels_on_either_side_of_the_16_bit_limit(spacing):
    mask = np.zeros((600, 600), np.uint8)
    mask[::spacing, ::spacing] = 255
    mask[100:140, 200:260] = 255  # and one big blob
    for connectivity in (4, 8):
        want = cv2.connectedComponentsWithStats(mask, connectivity=connectivity, ltype=cv2.CV_32S)[2]
        np.testing.assert_array_equal(component_stats(mask, connectivity), want)
    assert len(want) > 65536 if spacing == 2 else len(want) < 65535


def _red_ring_and_blue_disc() -> np.ndarray:
    frame = np.full((240, 321, 3), 120, np.uint8)  # an odd width: windows at the right edge
    cv2.circle(frame, (80, 120), 40, (30, 30, 220), -1)
    cv2.circle(frame, (80, 120), 28, (245, 245, 245), -1)
    cv2.circle(frame, (240, 120), 40, (200, 80, 20), -1)
    return frame


@pytest.mark.parametrize("colour, cues", [(None, {"red-hole", "blue-solid"}), ("blue", {"blue-solid"}), ("red", {"red-hole"}),
                                          ("map", {"red-hole", "blue-solid"})])  # found by the sign map: every cue
def test_a_window_runs_the_cues_of_its_colour(colour, cues):
    pipe = FramePipeline(None, ranker=Ranker())  # type: ignore[arg-type]  # proposing needs no classifier
    props = pipe.propose_in(_red_ring_and_blue_disc(), [Window((20, 40, 321, 200), colour)]).rois
    assert {p.cue for p in props} == cues
    for p in props:  # in frame coordinates, around the sign of that colour
        cx = (p.box[0] + p.box[2]) / 2
        assert abs(cx - (80 if p.colour == "red" else 240)) < 12


def test_a_budget_of_the_maps_boxes_alone_refuses_a_pipeline_without_a_map():
    from runtime.errors import ConfigError
    from runtime.pipeline import Budget

    with pytest.raises(ConfigError, match="there is no sign map"):  # else it would propose nothing, frame after frame
        FramePipeline(None, ranker=Ranker(), budget=Budget(colour=0, map_boxes=10))  # type: ignore[arg-type]


def test_windows_are_made_even_sized_inside_the_frame():
    assert _even((10, 10, 21, 20), 100, 100) == (10, 10, 22, 20)
    assert _even((90, 10, 99, 21), 99, 21) == (89, 9, 99, 21)  # at the frame's edge it grows the other way
    assert _even((0, 0, 99, 21), 99, 21) == (0, 0, 99, 21)  # the whole odd frame stays as it is


def test_the_ranker_fit_without_out_writes_under_runs_never_into_the_package(gtsdb_dir, tmp_path, monkeypatch):
    import subprocess

    from runtime.proposals import RANKER_FILE
    from tests.fixtures import REPO

    def status() -> str:
        proc = subprocess.run(["git", "status", "--porcelain", "--", "runtime"], cwd=REPO, capture_output=True, text=True,
                              check=False)
        return proc.stdout if proc.returncode == 0 else ""

    packaged, before = RANKER_FILE.read_bytes(), status()
    monkeypatch.chdir(tmp_path)
    assert fit_cmd.main(["--frames", str(gtsdb_dir), "--subset", "even", "--quiet"]) == 0
    assert RANKER_FILE.read_bytes() == packaged and status() == before  # git status of the package: as it was
    assert json.loads((tmp_path / "runs" / "proposal_ranker.json").read_text())["fitted_on"][0]["frames"] == ["00000", "00002"]
