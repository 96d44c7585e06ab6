"""The "not a sign" class: mined from frames away from signs, learned as one extra class, reported as unknown."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bench import gtsdb
from bench.evaluate import main as eval_main
from export import tflite as export_tflite
from runtime.annotations import annotations_fingerprint, read_gtsdb
from runtime.builds import BUILDS, build_file
from runtime.classifier import Classifier
from runtime.roi import iou_matrix
from tests import synth
from tests.fixtures import LOOSE_GATE
from train.__main__ import main as train_main
from train.frames import negatives
from train.runs import Run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return synth.write_gtsdb(tmp_path_factory.mktemp("frames"), frames=4, seed=3)


@pytest.fixture(scope="module")
def mined(frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("neg") / "negatives"
    assert negatives.main(["--frames", str(frames), "--out", str(out), "--subset", "even", "--per-frame", "30", "--quiet"]) == 0
    return out


def test_negatives_avoid_signs_and_record_their_frames(frames, mined):
    manifest = json.loads((mined / "negatives.json").read_text())
    assert manifest["fitted_on"] == [{"gt_sha256": annotations_fingerprint(frames), "frames": ["00000", "00002"]}]
    assert manifest["count"] == len(list(mined.glob("*.png"))) > 20
    assert {p.name.split("_")[0] for p in mined.glob("*.png")} == {"00000", "00002"}
    gt = read_gtsdb(frames / "gt.txt")
    for crop in manifest["crops"]:
        signs = [a.box for a in gt[crop["frame"]]]
        assert iou_matrix([crop["box"]], signs).max() < 0.1, crop
        assert negatives.sign_share(crop["box"], signs) <= negatives.MAX_SIGN_SHARE, crop
    for stem in manifest["fitted_on"][0]["frames"]:  # no near-copies: each crop shows another region
        boxes = [c["box"] for c in manifest["crops"] if c["frame"] == stem]
        ious = iou_matrix(boxes, boxes)
        assert (ious[~np.eye(len(boxes), dtype=bool)] < 0.5).all()


def test_sign_share_is_the_part_of_a_sign_inside_a_box():
    sign = (100, 100, 120, 120)
    assert negatives.sign_share((40, 40, 180, 180), [sign]) == 1.0  # IoU 0.02, yet the whole sign shows
    assert iou_matrix([(40, 40, 180, 180)], [sign]).max() < 0.1
    assert negatives.sign_share((110, 100, 200, 200), [sign]) == 0.5
    assert negatives.sign_share((0, 0, 50, 50), [sign, (40, 40, 60, 50)]) == 0.5
    assert negatives.sign_share((0, 0, 50, 50), []) == 0.0


def test_background_class_end_to_end(kaggle_dir, frames, mined, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--data", str(kaggle_dir), "--background", str(mined), "--epochs", "3", "--img-size", "16",
                       "--batch-size", "8", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["num_classes"] == 5 and meta["class_names"][-1] == "not a sign"
    assert meta["background"]["class_id"] == 4 and meta["background"]["fitted_on"][0]["frames"] == ["00000", "00002"]
    # evaluate rebuilds the same split, background included; the test set has no background images
    assert eval_main(["--run", str(run), "--data", str(kaggle_dir), "--split", "val", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] == pytest.approx(meta["val_accuracy"], abs=1e-6) and report["per_class"][4]["support"] > 0
    sign_rows = report["per_class"][:4]  # the signs' accuracy: their recalls weighted by their images
    assert report["sign_images"] == sum(r["support"] for r in sign_rows) == report["images"] - report["per_class"][4]["support"]
    assert report["sign_accuracy"] == pytest.approx(sum(r["recall"] * r["support"] for r in sign_rows) / report["sign_images"])
    assert eval_main(["--run", str(run), "--data", str(kaggle_dir), "--split", "test"]) == 0
    capsys.readouterr()

    assert export_tflite.main(["--int8", "--run", str(run), "--calib-samples", "150", *LOOSE_GATE]) == 0
    capsys.readouterr()
    build = build_file(run, BUILDS["tflite-int8"])
    clf = Classifier.from_build(build, threshold=0.0)
    assert clf.background_class == 4
    probs = clf.predict_proba(np.zeros((1, 16, 16, 3), np.float32))
    forced = np.zeros_like(probs)
    forced[0, 4] = 1.0
    pred = clf.predictions(forced)[0]
    assert pred.class_id == -1 and pred.top_k[0][1] == "not a sign"  # background is reported as unknown

    assert gtsdb.main(["--build", str(build), "--frames", str(frames), "--threads", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "leaving out 2 frames" in captured.err
    assert all(s["frames"] == 2 for s in json.loads(captured.out))


def test_background_folder_without_crops(kaggle_dir, tmp_path, capsys):
    empty = tmp_path / "neg"
    empty.mkdir()
    assert train_main(["--data", str(kaggle_dir), "--background", str(empty), "--out", str(tmp_path / "r")]) == 1
    assert "holds no crops" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_extend_a_run_with_a_background_class(trained_run, mined, tmp_path, capsys):
    """--extend RUN --background DIR: RUN's classes keep their head weights, "not a sign" joins as the last class,
    the run records what the signs lost; --zoom/--shift override RUN's augmentation (looser proposal boxes)."""
    out = tmp_path / "bg-ext"
    assert train_main(["--extend", str(trained_run), "--background", str(mined), "--zoom", "0.25", "--shift", "0.15",
                       "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    assert "old classes: accuracy" in capsys.readouterr().out
    meta = json.loads((out / "metadata.json").read_text())
    base = json.loads((trained_run / "metadata.json").read_text())
    assert meta["class_names"] == [*base["class_names"], "not a sign"]
    assert meta["background"]["class_id"] == base["num_classes"] and meta["background"]["fitted_on"][0]["frames"] == ["00000", "00002"]
    ext = meta["extension"]
    assert ext["added"] is None and ext["background"] == str(mined.resolve())
    assert ext["old_classes"]["images"] == base["dataset"]["val_images"]  # the base's own held-out tracks
    assert set(ext["new_classes"]) == {"not a sign"} and ext["new_classes"]["not a sign"]["held_out"] > 0
    assert (meta["config"]["augment"]["zoom"], meta["config"]["augment"]["shift"]) == (0.25, 0.15)
    assert meta["config"]["augment"]["rotation_deg"] == base["config"]["augment"]["rotation_deg"]  # the rest: RUN's

    # its data remounted (file times changed): the same data, though the crops' frames are tracks of the split too
    csv = Run.open(trained_run).data_path / "Train.csv"
    st = csv.stat()
    try:
        os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        Run.open(out).splits()
        assert "is not the data" not in capsys.readouterr().err
    finally:
        os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns))

    # a run that has a background class already cannot get a second one
    assert train_main(["--extend", str(out), "--background", str(mined), "--out", str(tmp_path / "twice")]) == 1
    assert "has a background class already" in capsys.readouterr().err
    assert not (tmp_path / "twice").exists()
