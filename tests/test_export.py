"""Export every build of a tiny model, load each through the runtime, and hold the gate both ways."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from export import onnx as export_onnx
from export import tflite as export_tflite
from runtime.builds import BUILDS, build_file, sidecar_of
from runtime.classifier import Classifier
from runtime.preprocess import to_model_input
from tests.fixtures import LOOSE_GATE as LOOSE
from train.data.split import balanced_sample
from train.runs import Run

pytestmark = pytest.mark.slow

def _val(path):
    run = Run.open(path)
    val = run.split("val")
    return val, to_model_input(val.images, run.preprocess)


def test_all_six_builds_written_with_sidecars(exported):
    for spec in BUILDS.values():
        path = build_file(exported, spec)
        assert path.is_file() and sidecar_of(path).is_file(), spec.name
        meta = json.loads(sidecar_of(path).read_text())
        assert meta["build"] == spec.name and meta["num_classes"] == 4 and meta["verification"]["passed"]
        assert meta["preprocess"]["size"] == 16 and meta["float_model"]["sha256"]
    assert not list(exported.glob(".*part*")), "temp files left behind"


def test_each_build_classifies_like_the_float_model_through_the_runtime(exported):
    import keras

    val, x = _val(exported)
    ref = keras.models.load_model(exported / "model.keras").predict(x, verbose=0)
    for spec in BUILDS.values():
        clf = Classifier.from_build(build_file(exported, spec))
        probs = clf.predict_proba(x)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.02)
        if spec.max_prob_delta is not None:
            assert np.abs(probs - ref).max() <= spec.max_prob_delta, spec.name
        else:
            assert (probs.argmax(1) == ref.argmax(1)).mean() >= 0.9, spec.name
        preds = clf.classify(val.images[:5])
        assert [p.top_k[0][0] for p in preds] == probs[:5].argmax(1).tolist()


def test_int8_builds_are_integer_and_small(exported):
    report = {e["build"]: e for e in json.loads((exported / "export_report.json").read_text())["builds"]}
    assert set(report) == set(BUILDS)
    assert report["tflite-int8"]["analysis"]["integer_only"]
    assert report["tflite-int8"]["calibration_seconds"] > 0
    assert report["tflite-int8"]["size_kb"] * 3.5 <= report["tflite-f32"]["size_kb"]
    assert report["tflite-int8"]["analysis"]["float_io"]  # the default: QUANTIZE/DEQUANTIZE at the graph's edges
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(report["tflite-int8"]["analysis"]["ops"])
    side = json.loads(sidecar_of(build_file(exported, BUILDS["tflite-int8"])).read_text())
    assert side["input"]["dtype"] == "float32" and side["input"]["quantization"] is None
    md = (exported / "export_report.md").read_text()
    assert "| tflite-int8 |" in md and "CONV_2D" in md


def test_int8_io_for_integer_only_accelerators(exported, tmp_path):
    out = tmp_path / "io_int8.tflite"
    assert export_tflite.main(["--int8", "--run", str(exported), "--io-dtype", "int8", "--out", str(out),
                               "--calib-samples", "150", *LOOSE]) == 0
    side = json.loads(sidecar_of(out).read_text())
    assert side["input"]["dtype"] == "int8" and side["input"]["quantization"]["scale"] > 0
    from export.report import analyse_tflite

    analysis = analyse_tflite(out)
    assert analysis["integer_only"] and not analysis["float_io"] and "QUANTIZE" not in analysis["ops"]
    _, x = _val(exported)
    default = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"])).predict_proba(x)
    assert (Classifier.from_build(out).predict_proba(x).argmax(1) == default.argmax(1)).mean() >= 0.95


def test_onnx_carries_metadata_in_metadata_props(exported):
    import onnx

    for name in ("onnx-f32", "onnx-int8"):
        model = onnx.load(str(build_file(exported, BUILDS[name])))
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props["signkit"])["build"] == name
        assert model.opset_import[0].version >= 17
    # With the sidecar gone the runtime still opens the ONNX build from its own metadata.
    lone = exported / "lone" / "model_int8.onnx"
    lone.parent.mkdir()
    shutil.copy(build_file(exported, BUILDS["onnx-int8"]), lone)
    assert Classifier.from_build(lone).class_names[0] == "class 0"


def test_broken_calibration_fails_the_gate_and_writes_nothing(exported, tmp_path, capsys):
    # Blank frames: every calibration input is zero after standardisation, so the int8 ranges are useless.
    bad = tmp_path / "blank.npz"
    np.savez(bad, images=np.full((200, 16, 16, 3), 128, np.uint8), labels=np.arange(200) % 4)
    out = tmp_path / "bad_int8.tflite"
    rc = export_tflite.main(["--int8", "--run", str(exported), "--calib-data", str(bad), "--out", str(out), *LOOSE])
    captured = capsys.readouterr()
    assert rc == 1
    assert "FAIL" in captured.out and "worst classes" in captured.out
    assert "failed verification and were not written" in captured.err
    assert not out.exists() and not sidecar_of(out).exists() and list(tmp_path.iterdir()) == [bad]


def test_default_gate_is_strict(exported):
    from export.verify import Gate

    assert Gate().min_agreement == 99.5 and Gate().max_drop == 0.3


def test_default_model_is_the_latest_run(exported, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(exported, runs / "edge-1")
    monkeypatch.setenv("SIGNKIT_RUNS", str(runs))
    assert export_onnx.main(["--calib-samples", "120", *LOOSE]) == 0
    assert f"using the most recent training run: {runs / 'edge-1'}" in capsys.readouterr().err


def test_balanced_sample_spreads_classes():
    labels = np.array([0] * 100 + [1] * 10 + [2] * 50)
    picked = balanced_sample(labels, 60)
    assert np.bincount(labels[picked]).tolist() == [25, 10, 25]


# --- bad input ---------------------------------------------------------------------------------

def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_no_trained_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIGNKIT_RUNS", str(tmp_path / "runs"))
    assert export_tflite.main(["--int8"]) == 1
    assert "no trained model found" in _err(capsys)


def test_path_is_not_a_keras_model(tmp_path, capsys):
    (tmp_path / "model.keras").write_text("not a model")
    assert export_tflite.main(["--run", str(tmp_path)]) == 1
    assert "is not a training run" in _err(capsys)


def test_calibration_data_missing(exported, tmp_path, capsys):
    assert export_tflite.main(["--int8", "--run", str(exported), "--calib-data", str(tmp_path / "nope")]) == 1
    assert "--calib-data" in _err(capsys)


def test_calibration_data_too_small(exported, tmp_path, capsys):
    small = tmp_path / "small.npz"
    np.savez(small, images=np.zeros((40, 16, 16, 3), np.uint8), labels=np.zeros(40, np.int64))
    assert export_tflite.main(["--int8", "--run", str(exported), "--calib-data", str(small)]) == 1
    assert "has only 40 images" in _err(capsys)


def test_calibration_data_of_another_size_or_class_count(exported, tmp_path, capsys):
    wrong_size = tmp_path / "size.npz"
    np.savez(wrong_size, images=np.zeros((150, 32, 32, 3), np.uint8), labels=np.zeros(150, np.int64))
    assert export_tflite.main(["--int8", "--run", str(exported), "--calib-data", str(wrong_size)]) == 1
    assert "model takes (16, 16, 3)" in _err(capsys)
    wrong_classes = tmp_path / "classes.npz"
    np.savez(wrong_classes, images=np.zeros((150, 16, 16, 3), np.uint8), labels=np.arange(150) % 43)
    assert export_tflite.main(["--int8", "--run", str(exported), "--calib-data", str(wrong_classes)]) == 1
    assert "labels outside 0..3" in _err(capsys)


def test_output_not_writable(exported, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert export_tflite.main(["--run", str(exported), "--out", str(blocker / "m.tflite")]) == 1
    assert "not writable" in _err(capsys)


def test_interrupted_export_leaves_no_partial_file(exported, tmp_path, monkeypatch):
    from export import builder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "check_candidate", interrupted)
    out = tmp_path / "m_int8.tflite"
    assert export_tflite.main(["--int8", "--run", str(exported), "--out", str(out)]) == 130
    assert list(tmp_path.iterdir()) == []


def test_threshold_is_calibrated_per_build_and_can_be_set(exported, capsys):
    from export import threshold

    for name in ("tflite-f32", "tflite-int8"):
        meta = json.loads(sidecar_of(build_file(exported, BUILDS[name])).read_text())
        assert 0 < meta["threshold"] < 1
    build = build_file(exported, BUILDS["onnx-int8"])
    assert threshold.main(["--build", str(build), "--value", "0.42"]) == 0
    assert Classifier.from_build(build).threshold == 0.42
    import onnx

    props = {p.key: p.value for p in onnx.load(str(build)).metadata_props}
    assert json.loads(props["signkit"])["threshold"] == 0.42
    assert threshold.main(["--build", str(build), "--max-reject", "0.05"]) == 0
    assert "threshold" in capsys.readouterr().out
    assert build.with_name(build.name + ".threshold.png").is_file()
    assert Classifier.from_build(build).threshold != 0.42


def test_pick_threshold_keeps_the_requested_share_of_correct_predictions():
    from export.threshold import pick_threshold, threshold_curve

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5) * 0.3, size=2000)
    labels = probs.argmax(1)
    labels[:200] = (labels[:200] + 1) % 5  # some wrong
    t = pick_threshold(probs, labels, 0.1)
    correct = probs.max(1)[probs.argmax(1) == labels]
    assert 0.88 <= (correct >= t).mean() <= 0.92
    curve = threshold_curve(probs, labels)
    np.testing.assert_allclose(curve["right"] + curve["wrong"] + curve["unsure"], 1.0)


def test_corrupt_keras_file_in_a_run(exported, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metadata.json", "split.json"):
        shutil.copy(exported / name, run / name)
    (run / "model.keras").write_bytes(b"PK\x03\x04 truncated zip")
    assert export_tflite.main(["--run", str(run)]) == 1
    assert "is not a loadable Keras model" in _err(capsys)
