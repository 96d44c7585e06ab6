"""Model insight on the tiny fixture model: data inspection, error analysis, Grad-CAM, dead filters, int8 debugging."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest

from tests import synth
from tests.browser import images_loaded, rendered_dom
from train.data import Split


def test_inspect_writes_the_summary_and_pictures(kaggle_dir, tmp_path, capsys):
    from train.insight import inspect as inspect_cmd

    assert inspect_cmd.main(["--data", str(kaggle_dir), "--out", str(tmp_path), "--val-fraction", "0.25", "--quiet"]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| class | name | train | val | test | tracks | brightness | dark_share |" in summary
    assert summary.count("\n| ") >= 5  # header + 4 classes
    for png in ("class_balance.png", "sizes.png", "brightness.png", "extremes.png"):
        img = cv2.imread(str(tmp_path / png))
        assert img is not None and img.shape[0] > 100, png
    assert "![Class balance](class_balance.png)" in summary
    assert "summary:" in capsys.readouterr().out


def _split(images, labels, name="x"):
    return Split(np.asarray(images, np.uint8), np.asarray(labels, np.int64), None, ("a", "b", "c"), name)


def test_cross_split_duplicates_tell_leaks_from_look_alikes():
    from train.insight.inspect import cross_duplicates

    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, (20, 16, 16, 3))
    val = rng.integers(0, 255, (5, 16, 16, 3))
    val[1] = np.clip(train[7] * 0.6 + 20, 0, 255)  # the same image, darker: still a duplicate
    val[3] = train[11]
    pairs = cross_duplicates({"train": _split(train, [0] * 20), "val": _split(val, [0, 0, 0, 2, 0])})
    found = {(p.index_a, p.index_b): p for p in pairs}
    assert set(found) == {(1, 7), (3, 11)} and all(p.split_a == "val" and p.split_b == "train" for p in pairs)
    assert found[(1, 7)].corr > 0.99


def test_error_analysis_files(tmp_path):
    from bench.mistakes import dump_errors, error_analysis, mean_probabilities

    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 2, 1, 0, 2, 2, 1])
    probs = np.eye(3)[labels] * 0.7 + 0.1
    probs[2], probs[5] = [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]  # two errors: 2 as 0 and 2 as 1
    images = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    files = [f"Train/{c}/0000{c}_00001_0000{i}.png" for i, c in enumerate(labels)]
    names = ["Stop", "Yield", "No entry"]
    out = error_analysis(probs, labels, images, files, names, tmp_path, "val")
    with open(out["predictions"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and rows[2]["truth_name"] == "No entry" and rows[2]["prediction_name"] == "Stop"
    assert rows[2]["right"] == "0" and rows[0]["top1"].startswith("0:") and rows[0]["file"] == files[0]
    for key in ("errors", "random", "class_accuracy", "confidence", "mean_probabilities"):
        assert cv2.imread(str(out[key])) is not None, key
    dumped = dump_errors(tmp_path / "errors", images, probs, labels, files, names)
    assert sorted(p.name for p in dumped) == ["00002_00001_00002__No_entry__as__Stop.png",
                                              "00002_00001_00005__No_entry__as__Yield.png"]
    m = mean_probabilities(probs, labels, 3)
    np.testing.assert_allclose(m.sum(1), probs.sum(1)[:3].mean() * 0 + m.sum(1))
    assert m.shape == (3, 3) and m[2, 0] > 0.2 and m[0, 0] == pytest.approx(0.8)


@pytest.mark.slow
def test_evaluate_writes_the_pictures_and_dumps_errors(trained_run, tmp_path, capsys):
    from bench.evaluate import main as eval_main

    assert eval_main(["--run", str(trained_run), "--split", "val", "--out", str(tmp_path / "ev"),
                      "--dump-errors", str(tmp_path / "wrong"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["pictures"]) == {"predictions", "errors", "random", "class_accuracy", "confidence", "mean_probabilities"}
    wrong = sorted((tmp_path / "wrong").glob("*.png"))
    assert len(wrong) == report["dumped_errors"] == round(report["images"] * (1 - report["accuracy"]))
    assert all("__as__" in p.name for p in wrong)


@pytest.fixture(scope="module")
def explained(exported, tmp_path_factory):
    from train.insight.explain import main as explain_main

    out = tmp_path_factory.mktemp("explain")
    assert explain_main(["--run", str(exported), "--count", "4", "--dead-sample", "32", "--out", str(out), "--html"]) == 0
    return out


@pytest.mark.slow
def test_explain_writes_maps_gradcam_weights_and_dead_filters(explained):
    md = (explained / "explain.md").read_text()
    assert "## Dead filters" in md and md.count("| re_lu") == 6
    dead = json.loads((explained / "dead_filters.json").read_text())
    assert [d["filters"] for d in dead] == [24, 24, 48, 48, 80, 80]  # edge-xs, the default, layer by layer
    cams = sorted(explained.glob("*_gradcam.png"))
    assert len(cams) == 4
    assert cv2.imread(str(cams[0])).shape[1] == 3 * 64  # crop, predicted, true: 16 px crops shown 4x
    grids = sorted(explained.glob("00_*_re_lu*.png"))
    assert len(grids) == 6 and cv2.imread(str(explained / "first_layer_weights.png")) is not None


@pytest.mark.slow
def test_explorer_page_renders_with_every_image(explained):
    dom = rendered_dom(explained / "explorer.html")
    loaded, total = images_loaded(dom)
    assert total >= 4 and loaded == total
    layers = [d["layer"] for d in json.loads((explained / "dead_filters.json").read_text())]  # Keras numbers them per process
    assert '<select id="layer">' in dom and '<table id="top5">' in dom
    assert all(f">{name}</option>" in dom for name in layers), layers


@pytest.mark.slow
def test_a_filter_forced_dead_is_counted(exported):
    from train.insight.explain import dead_filters, feature_layers
    from train.runs import Run

    run = Run.open(exported)
    model = run.load_model()
    val = run.split("val")
    from runtime.preprocess import to_model_input

    x = to_model_input(val.images, run.preprocess)
    before = dead_filters(model, x)[0]["dead"]
    conv = next(layer for layer in model.layers if type(layer).__name__ == "Conv2D")
    bn = next(layer for layer in model.layers if type(layer).__name__ == "BatchNormalization")
    kernel = conv.get_weights()[0]
    kernel[..., 3] = 0.0  # filter 3 sees nothing ...
    conv.set_weights([kernel])
    gamma, beta, mean, var = bn.get_weights()
    mean[3], beta[3] = 0.0, -1.0  # ... and its batch norm pushes it below zero: ReLU is 0 everywhere
    bn.set_weights([gamma, beta, mean, var])
    rows = dead_filters(model, x)
    assert rows[0]["dead"] == before + 1 and 3 in rows[0]["dead_ids"] and feature_layers(model)[0].name == rows[0]["layer"]


@pytest.mark.slow
def test_gradcam_peaks_where_the_sign_is(exported):
    """A sign on the left of a noisy frame: the true class's Grad-CAM is hotter on the left half."""
    from runtime.preprocess import PreprocessSpec, crop_and_resize, to_model_input
    from train.insight.explain import explain
    from train.runs import Run

    run = Run.open(exported)
    rng = np.random.default_rng(3)
    hits = 0
    for cls in range(4):
        canvas = cv2.GaussianBlur(rng.integers(90, 140, (40, 80, 3), dtype=np.uint8), (5, 5), 2)
        sign, _ = synth.make_sign(cls, 30, rng)
        canvas[:, :40] = cv2.resize(sign, (40, 40))
        x = to_model_input(crop_and_resize(canvas, None, PreprocessSpec(size=16))[None], run.preprocess)
        cam = explain(run.load_model(), x, np.array([cls])).cams["true"][0]
        hits += int(cam[:, :8].mean() > cam[:, 8:].mean())
    assert hits >= 3, f"Grad-CAM was hotter on the sign's half for {hits} of 4 classes"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tflite-int8", "onnx-int8"])
def test_export_debug_ranks_layers_and_keeps_the_worst_in_float(exported, tmp_path, name):
    from export import debug
    from runtime.builds import BUILDS, build_file
    from tests.fixtures import LOOSE_GATE

    run = tmp_path / "run"
    shutil.copytree(exported, run)
    build = build_file(run, BUILDS[name])
    out = tmp_path / "dbg"
    assert debug.main(["--run", str(run), "--build", str(build), "--calib-samples", "120", "--keep-worst", "1",
                       "--out", str(out), *LOOSE_GATE]) == 0
    with open(out / "layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 5 and rows[0]["rank"] == "1" and cv2.imread(str(out / "layers.png")) is not None
    key = "rmse_over_scale" if name.startswith("tflite") else "sqnr_db"
    values = [float(r[key]) for r in rows]
    assert values == sorted(values, reverse=name.startswith("tflite"))  # worst first
    result = json.loads((out / "keep_float.json").read_text())
    assert result["kept_float"] == [rows[0]["node"]] and result["passed_gate"]
    assert result["after"]["ms_per_roi"] > 0 and result["before"]["size_kb"] > 0
    assert json.loads((out / f"{build.name}.json").read_text())["kept_float"] == [rows[0]["node"]]


def test_a_fused_tflite_node_is_labelled_by_its_layer():
    from export.debug import short_name

    fused = "m/re_lu_1/Relu;m/batch_normalization_1/batchnorm/add_1;m/conv2d_1/convolution;m/batch_normalization_1/batchnorm/sub1"
    assert short_name(fused) == "conv2d_1"
    assert short_name("m/logits_1/MatMul;m/logits_1/BiasAdd") == "logits_1"
    assert short_name("StatefulPartitionedCall_1:0") == "StatefulPartitionedCall_1:0"
