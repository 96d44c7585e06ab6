"""Proposals and the bench.gtsdb frame pipeline on synthetic GTSDB-layout frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bench import gtsdb
from runtime.annotations import read_gtsdb
from runtime.builds import BUILDS, build_file
from runtime.machine import describe_cpu
from runtime.pipeline import split_cores
from runtime.proposals import propose
from runtime.roi import iou_matrix
from tests import synth


@pytest.fixture(scope="module")
def gtsdb_dir(tmp_path_factory):
    return synth.write_gtsdb(tmp_path_factory.mktemp("gtsdb"))


def test_proposals_find_coloured_signs_on_a_plain_scene(gtsdb_dir):
    gt = read_gtsdb(gtsdb_dir / "gt.txt")
    for stem, truth in gt.items():
        frame = cv2.imread(str(gtsdb_dir / f"{stem}.jpg"))
        props = propose(frame)
        ious = iou_matrix([a.box for a in truth], [p.box for p in props])
        assert (ious.max(axis=1) >= 0.5).all(), (stem, ious.max(axis=1))
        assert {p.colour for p in props} >= {"red", "blue", "yellow"}


def test_proposals_on_a_blank_frame_are_empty():
    import numpy as np

    assert propose(np.full((400, 600, 3), 128, np.uint8)) == []


@pytest.mark.slow
def test_bench_gtsdb_without_the_second_look_keeps_every_detection(exported, gtsdb_dir, capsys):
    build = build_file(exported, BUILDS["tflite-int8"])
    rows = {}
    for flags in ((), ("--no-second-look",)):
        assert gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--proposals", "builtin", "--threads", "1",
                           "--repeat", "1", "--threshold", "0", "--json", *flags]) == 0
        (rows[flags],) = json.loads(capsys.readouterr().out)
    on, off = rows[()], rows[("--no-second-look",)]
    assert on["second_look"] and not off["second_look"] and off["ms"]["second look"] == 0.0
    assert on["detections"] <= off["detections"] and on["true_positives"] <= off["true_positives"]
    assert on["proposals_per_frame"] == off["proposals_per_frame"]  # the same proposals, looked at again or not


@pytest.mark.slow
def test_bench_gtsdb_scores_gt_and_builtin_proposals(exported, gtsdb_dir, capsys):
    build = build_file(exported, BUILDS["tflite-int8"])
    assert gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--threads", "1", "2", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {(s["proposals"], s["threads"]) for s in scores} == {("builtin", 1), ("gt", 1), ("builtin", 2), ("gt", 2)}
    for s in scores:
        assert s["frames"] == 3 and s["signs"] == 12
        assert set(s["ms"]) == {"proposals", "crop+preprocess", "invoke", "post", "second look", "total"} and s["fps"] > 0
        assert s["cpu"] == describe_cpu()
        if s["proposals"] == "gt":
            assert s["proposal_recall"] == 1.0 and s["top1_accuracy"] is not None
        else:
            assert s["proposal_recall"] == 1.0 and s["top1_accuracy"] is None
    assert gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--proposals", "gt", "--threads", "1",
                       "--repeat", "1"]) == 0
    text = capsys.readouterr().out
    assert "top1" in text and f"timed on {describe_cpu()}" in text
    with pytest.raises(SystemExit) as e:
        gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--repeat", "0"])
    assert e.value.code == 2


def test_bench_gtsdb_overlap_scores_the_same_as_one_frame_after_the_other(exported, gtsdb_dir, capsys):
    build = build_file(exported, BUILDS["tflite-int8"])
    assert gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--proposals", "builtin", "--threads", "1",
                       "--repeat", "1", "--overlap", "--json"]) == 0
    plain, ahead = json.loads(capsys.readouterr().out)
    assert (plain["overlap"], ahead["overlap"]) == (False, True)
    counts = ("proposals_per_frame", "signs_proposed", "true_positives", "detections", "precision", "recall", "f1")
    assert {k: ahead[k] for k in counts} == {k: plain[k] for k in counts}
    assert ahead["ms"]["total"] > 0 and ahead["fps"] > 0
    assert gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--proposals", "builtin", "--threads", "1",
                       "--repeat", "1", "--overlap"]) == 0
    assert "builtin+ahead" in capsys.readouterr().out


def test_bench_gtsdb_overlap_splits_the_cores_as_the_camera_demo(exported, gtsdb_dir, capsys, monkeypatch):
    build = build_file(exported, BUILDS["tflite-int8"])
    opened, cv_threads = [], []
    real_open, real_score = gtsdb.Classifier.from_build, gtsdb.score_pipeline

    def open_build(path, threads=1, threshold=None):
        opened.append(threads)
        return real_open(path, threads=threads, threshold=threshold)

    def score(*args, **kwargs):
        cv_threads.append(cv2.getNumThreads())
        return real_score(*args, **kwargs)

    monkeypatch.setattr(gtsdb.Classifier, "from_build", open_build)
    monkeypatch.setattr(gtsdb, "score_pipeline", score)
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)  # so that the overlapped setting's own OpenCV thread count shows
    try:
        assert gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--proposals", "builtin", "--threads", "2",
                           "--repeat", "1", "--overlap", "--json"]) == 0
        assert cv2.getNumThreads() == 1  # restored after the overlapped setting
    finally:
        cv2.setNumThreads(before)
    plain, ahead = json.loads(capsys.readouterr().out)
    assert opened == [2, split_cores(2)[0]] and cv_threads == [1, split_cores(2)[1]]
    assert (plain["threads"], ahead["threads"]) == (2, 2)  # the row names the cores it was given


def test_bench_gtsdb_bad_build_or_folder(tmp_path, capsys):
    (tmp_path / "model_int8.tflite").write_bytes(b"x")
    assert gtsdb.main(["--build", str(tmp_path / "model_int8.tflite"), "--frames", str(tmp_path)]) == 1
    assert "no metadata sidecar" in capsys.readouterr().err  # a BuildError, reported in one line


@pytest.mark.slow
def test_bench_gtsdb_folder_without_annotations(exported, tmp_path, capsys):
    build = build_file(exported, BUILDS["tflite-int8"])
    assert gtsdb.main(["--build", str(build), "--frames", str(tmp_path)]) == 1
    assert "has no gt.txt" in capsys.readouterr().err  # a RoiError, reported in one line


def test_match_needs_the_right_class():
    from runtime.annotations import Annotation
    from runtime.classifier import Prediction

    truth = [Annotation((0, 0, 10, 10), 3)]
    right = Prediction(3, "x", 0.9, ())
    wrong = Prediction(4, "y", 0.9, ())
    assert gtsdb.match([((0, 0, 10, 10), right)], truth, 0.5) == 1
    assert gtsdb.match([((0, 0, 10, 10), wrong)], truth, 0.5) == 0
    assert gtsdb.match([((5, 5, 15, 15), right)], truth, 0.5) == 0  # IoU 0.14


@pytest.mark.slow
def test_bench_gtsdb_leaves_out_the_frames_that_fitted_its_ranker(exported, gtsdb_dir, tmp_path, capsys):
    from train.frames import ranker as fit_cmd

    ranker = tmp_path / "ranker.json"
    assert fit_cmd.main(["--frames", str(gtsdb_dir), "--subset", "even", "--out", str(ranker), "--quiet"]) == 0
    capsys.readouterr()
    build = build_file(exported, BUILDS["tflite-int8"])
    assert gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--ranker", str(ranker), "--threads", "1", "--json"]) == 0
    out = capsys.readouterr()
    assert "leaving out 2 frames" in out.err
    assert {s["frames"] for s in json.loads(out.out)} == {1}  # only 00001 was not fitted on
    assert gtsdb.main(["--build", str(build), "--frames", str(gtsdb_dir), "--ranker", str(ranker), "--subset", "even"]) == 1
    assert "score other frames" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_gtsdb_pools_two_folds(exported, gtsdb_dir, tmp_path, capsys):
    from train.frames import ranker as fit_cmd

    rankers = [tmp_path / f"{subset}.json" for subset in ("even", "odd")]
    for subset, path in zip(("even", "odd"), rankers):
        assert fit_cmd.main(["--frames", str(gtsdb_dir), "--subset", subset, "--out", str(path), "--quiet"]) == 0
    capsys.readouterr()
    build = str(build_file(exported, BUILDS["tflite-int8"]))
    assert gtsdb.main(["--build", build, build, "--ranker", *map(str, rankers), "--frames", str(gtsdb_dir),
                       "--proposals", "builtin", "--threads", "1", "--repeat", "1", "--json"]) == 0
    even_fit, odd_fit, pooled = json.loads(capsys.readouterr().out)
    assert (even_fit["frames"], odd_fit["frames"], pooled["frames"]) == (1, 2, 3)  # each fold on the other's frames
    assert pooled["build"] == "pooled" and pooled["signs"] == even_fit["signs"] + odd_fit["signs"] == 12
    assert pooled["true_positives"] == even_fit["true_positives"] + odd_fit["true_positives"]
    assert pooled["recall"] == pytest.approx(pooled["true_positives"] / 12)
    with pytest.raises(SystemExit) as e:
        gtsdb.main(["--build", build, build, "--ranker", *map(str, rankers * 2), "--frames", str(gtsdb_dir)])
    assert e.value.code == 2


@pytest.mark.slow
def test_detect_signs_runs_the_frame_pipeline(exported, gtsdb_dir):
    from runtime.classifier import Classifier
    from runtime.pipeline import OVERLAP_IOU, detect_signs

    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"]), threshold=0.0)
    frame = cv2.imread(str(gtsdb_dir / "00000.jpg"))
    dets = detect_signs(clf, frame)
    assert dets, "a threshold of 0 keeps every proposal the model does not call background"
    assert all(d.prediction.known for d in dets)
    assert [d.prediction.score for d in dets] == sorted((d.prediction.score for d in dets), reverse=True)
    ious = iou_matrix([d.box for d in dets], [d.box for d in dets])
    assert (ious[~np.eye(len(dets), dtype=bool)] < OVERLAP_IOU).all()
