"""The TensorFlow-free runtime: cropping properties, parity with training, ROI classification, bad input."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.annotations import read_gtsdb
from runtime.builds import BUILDS, build_file, sidecar_of
from runtime.classifier import Classifier, check_frame
from runtime.errors import BackendUnavailableError, BuildError
from runtime.preprocess import PreprocessSpec, crop_and_resize, expand_box, preprocess, to_model_input
from runtime.roi import RoiError, clamp_box, iou_matrix, load_boxes, nms, parse_boxes

# --- properties of boxes and crops -------------------------------------------------------------

coords = st.integers(-500, 1500)


@given(x1=coords, y1=coords, x2=coords, y2=coords, w=st.integers(1, 1000), h=st.integers(1, 1000))
def test_clamped_box_lies_inside_the_frame_or_is_none(x1, y1, x2, y2, w, h):
    box = clamp_box((x1, y1, x2, y2), w, h)
    if box is None:
        assert min(x2, w) <= max(x1, 0) or min(y2, h) <= max(y1, 0)
    else:
        bx1, by1, bx2, by2 = box
        assert 0 <= bx1 < bx2 <= w and 0 <= by1 < by2 <= h
        assert (bx1, by1, bx2, by2) == (max(x1, 0), max(y1, 0), min(x2, w), min(y2, h))


@given(x1=st.integers(0, 90), y1=st.integers(0, 60), bw=st.integers(1, 60), bh=st.integers(1, 60),
       margin=st.floats(0, 0.5), size=st.integers(4, 48))
@settings(max_examples=60, deadline=None)
def test_expanded_box_contains_the_box_and_crop_has_model_size(x1, y1, bw, bh, margin, size):
    w, h = 120, 90
    x2, y2 = min(w, x1 + bw), min(h, y1 + bh)
    ex1, ey1, ex2, ey2 = expand_box((x1, y1, x2, y2), margin, w, h)
    assert 0 <= ex1 <= x1 and 0 <= ey1 <= y1 and x2 <= ex2 <= w and y2 <= ey2 <= h
    frame = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    crop = crop_and_resize(frame, (x1, y1, x2, y2), PreprocessSpec(size=size, margin=margin))
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8


def test_nms_breaks_ties_by_position_and_orders_by_score():
    a, b, c = (0, 0, 10, 10), (1, 0, 11, 10), (50, 50, 60, 60)  # a and b overlap
    assert nms([a, b, c], [0.996, 0.996, 0.5], 0.3) == [0, 2]
    assert nms([b, a, c], [0.996, 0.996, 0.5], 0.3) == [0, 2]  # the first listed wins a tie, whichever box it is
    assert nms([a, b, c], [0.2, 0.9, 0.5], 0.3) == [1, 2]
    assert nms([c, a], [-3.0, -1.0], 0.3) == [1, 0]  # any real scores, negative too


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 40), st.integers(1, 40)), max_size=12))
def test_nms_keeps_no_two_overlapping_boxes(raw):
    boxes = [(x, y, x + w, y + h) for x, y, w, h in raw]
    keep = nms(boxes, [w * h for _, _, w, h in raw], 0.3)
    kept = [boxes[i] for i in keep]
    if len(kept) > 1:
        ious = iou_matrix(kept, kept)
        assert (ious[~np.eye(len(kept), dtype=bool)] <= 0.3).all()
    assert len(set(keep)) == len(keep)
    dropped = [boxes[i] for i in range(len(boxes)) if i not in keep]
    if dropped:  # nothing is lost without a reason: each dropped box overlaps a kept one
        assert (iou_matrix(dropped, kept).max(axis=1) > 0.3).all()


def test_bgr_frame_and_rgb_image_give_the_same_crop():
    rgb = np.random.default_rng(1).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    spec = PreprocessSpec(size=24)
    a = crop_and_resize(rgb, (5, 5, 40, 45), spec)
    b = crop_and_resize(np.ascontiguousarray(rgb[..., ::-1]), (5, 5, 40, 45), spec, order="bgr")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("norm", ["standardize", "unit", "symmetric"])
@pytest.mark.parametrize("colour", ["rgb", "gray"])
def test_normalisations(norm, colour):
    x = np.random.default_rng(2).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    y = to_model_input(x, PreprocessSpec(size=8, colour=colour, normalization=norm))
    assert y.shape == (3, 8, 8, 1 if colour == "gray" else 3) and y.dtype == np.float32
    if norm == "standardize":
        np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    elif norm == "unit":
        assert 0 <= y.min() and y.max() <= 1
    else:
        assert -1 <= y.min() and y.max() <= 1


# --- parity: what the runtime feeds a build is what training fed the model ----------------------

def test_runtime_preprocessing_of_a_frame_crop_equals_training_input(kaggle_dir):
    """Paste a training image into a bigger camera frame; the runtime's ROI crop must equal the training input."""
    import csv

    from train.data import load_dataset
    from train.data.formats import decode_image

    spec = PreprocessSpec(size=24)
    with open(kaggle_dir / "Train.csv") as f:
        row = next(csv.DictReader(f))
    img = decode_image((kaggle_dir / row["Path"]).read_bytes())
    roi = [int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")]
    training_input = to_model_input(load_dataset(kaggle_dir, size=24, progress=False).images[0], spec)
    frame = np.zeros((300, 400, 3), np.uint8)
    ox, oy = 123, 57
    frame[oy:oy + img.shape[0], ox:ox + img.shape[1]] = img[..., ::-1]  # camera frames are BGR
    box = (ox + roi[0], oy + roi[1], ox + roi[2] + 1, oy + roi[3] + 1)
    np.testing.assert_array_equal(preprocess(frame, box, spec, order="bgr"), training_input)


# --- ROI sources --------------------------------------------------------------------------------

def test_box_sources(tmp_path):
    assert parse_boxes("1,2,3,4; 5,6,7,8") == [(1, 2, 3, 4), (5, 6, 7, 8)]
    (tmp_path / "b.json").write_text(json.dumps({"boxes": [[1, 2, 30, 40]]}))
    assert load_boxes(tmp_path / "b.json") == [(1, 2, 30, 40)]
    (tmp_path / "gt.txt").write_text("00000.ppm;774;411;815;446;11\n00001.ppm;983;388;1024;432;40\n")
    gt = read_gtsdb(tmp_path / "gt.txt")
    assert gt["00000"][0].box == (774, 411, 816, 447) and gt["00001"][0].class_id == 40
    with pytest.raises(RoiError, match="not x1,y1,x2,y2"):
        parse_boxes("1,2,3")
    (tmp_path / "bad.txt").write_text("00000.ppm;774;oops\n")
    with pytest.raises(RoiError, match="line 1"):
        read_gtsdb(tmp_path / "bad.txt")


# --- classifying ROIs of a frame with a real build ----------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["tflite-int8", "onnx-int8", "tflite-f32"])
def test_classify_rois_matches_classifying_the_crops(exported, name):
    from tests import synth

    clf = Classifier.from_build(build_file(exported, BUILDS[name]))
    rng = np.random.default_rng(5)
    frame = np.full((200, 300, 3), 90, np.uint8)
    boxes = []
    for i, cls in enumerate((0, 1, 2, 3)):
        img, (x1, y1, x2, y2) = synth.make_sign(cls, 36, rng)
        ox, oy = 10 + 70 * i, 40 + 10 * i
        frame[oy:oy + img.shape[0], ox:ox + img.shape[1]] = img[..., ::-1]
        boxes.append((ox + x1, oy + y1, ox + x2 + 1, oy + y2 + 1))
    boxes.append((-50, -50, -10, -10))  # wholly outside: skipped
    dets = clf.classify_rois(frame, boxes)
    assert [d.box for d in dets] == boxes[:4]
    crops = [preprocess(frame, b, clf.preprocess, order="bgr") for b in boxes[:4]]
    probs = clf.predict_proba(np.stack(crops))
    assert [d.prediction.top_k[0][0] for d in dets] == probs.argmax(1).tolist()
    for d in dets:
        assert 0 <= d.prediction.score <= 1.0001 and len(d.prediction.top_k) == 3
        assert d.prediction.known == (d.prediction.score >= clf.threshold)  # below the build's threshold: unknown
    with pytest.raises(RoiError, match="no area inside the 300x200 frame"):
        clf.classify_rois(frame, boxes, on_invalid="raise")
    assert clf.classify_rois(frame, []) == []


@pytest.mark.slow
def test_threshold_turns_low_scores_into_unknown(exported):
    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-f32"]), threshold=1.01)
    pred = clf.classify([np.zeros((20, 20, 3), np.uint8)])[0]
    assert pred.class_id == -1 and pred.label == "unknown" and not pred.known and pred.top_k[0][0] >= 0


@pytest.mark.slow
def test_tflite_batch_is_one_invoke(exported, monkeypatch):
    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"]))
    assert clf.backend.supports_batch
    calls = []
    original = clf.backend.interpreter.invoke
    monkeypatch.setattr(clf.backend.interpreter, "invoke", lambda: calls.append(1) or original())
    clf.classify_rois(np.zeros((100, 100, 3), np.uint8), [(0, 0, 30, 30), (20, 20, 60, 60), (50, 50, 99, 99)])
    assert len(calls) == 1


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame, match", [
    (np.zeros((10, 10, 3), np.float32), "must be uint8"),
    (np.zeros((10, 10), np.uint8), "COLOR_GRAY2BGR"),
    (np.zeros((10, 10, 4), np.uint8), "COLOR_BGRA2BGR"),
    ([[1, 2]], "numpy array"),
])
def test_bad_frames(frame, match):
    with pytest.raises(RoiError, match=match):
        check_frame(frame)


@pytest.mark.slow
def test_truncated_and_foreign_model_files(exported, tmp_path):
    for name in ("tflite-int8", "onnx-f32"):
        src = build_file(exported, BUILDS[name])
        bad = tmp_path / src.name
        bad.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
        shutil.copy(sidecar_of(src), sidecar_of(bad))
        with pytest.raises(BuildError, match="re-export"):
            Classifier.from_build(bad)
    foreign = tmp_path / "model_int8.tflite"
    foreign.write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    with pytest.raises(BuildError):
        Classifier.from_build(foreign)


@pytest.mark.slow
def test_sidecar_that_does_not_match_the_tensors(exported, tmp_path):
    src = build_file(exported, BUILDS["tflite-f32"])
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    meta = json.loads(sidecar_of(src).read_text())
    meta["preprocess"]["size"] = 32
    sidecar_of(dst).write_text(json.dumps(meta))
    with pytest.raises(BuildError, match=r"metadata says input \(32, 32, 3\) but the model takes \(16, 16, 3\)"):
        Classifier.from_build(dst)
    meta["preprocess"]["size"] = 16
    meta["class_names"] = meta["class_names"][:3]
    sidecar_of(dst).write_text(json.dumps(meta))
    with pytest.raises(BuildError, match="lists 3 classes but the model outputs 4"):
        Classifier.from_build(dst)


def test_missing_build_and_sidecar(tmp_path):
    with pytest.raises(BuildError, match="not found"):
        Classifier.from_build(tmp_path / "nope_int8.tflite")
    (tmp_path / "m_int8.tflite").write_bytes(b"x")
    with pytest.raises(BuildError, match="no metadata sidecar"):
        Classifier.from_build(tmp_path / "m_int8.tflite")


def test_missing_backend_names_the_pip_line(monkeypatch):
    import builtins

    from runtime import backends

    real_import = builtins.__import__

    def no_tflite(name, *args, **kwargs):
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tflite)
    with pytest.raises(BackendUnavailableError, match="pip install ai-edge-litert"):
        backends.load_tflite_interpreter_class()


def test_keep_signs_drops_unknowns_and_the_less_sure_of_two_overlapping_detections():
    from runtime.classifier import Detection, Prediction
    from runtime.pipeline import keep_signs

    def det(box, cls, score):
        return Detection(box, Prediction(cls, "x" if cls >= 0 else "unknown", score, ()))

    dets = [det((0, 0, 40, 40), 1, 0.97), det((4, 4, 44, 44), 2, 0.99), det((100, 0, 140, 40), -1, 0.5),
            det((200, 0, 240, 40), 3, 0.95)]
    kept = keep_signs(dets)
    assert [d.prediction.class_id for d in kept] == [2, 3]  # most confident first, the 0.97 duplicate gone
    assert keep_signs([]) == []


def test_rescaled_box_keeps_its_centre():
    from runtime.pipeline import rescaled

    assert rescaled((10, 20, 50, 40), 1.5) == (0.0, 15.0, 60.0, 45.0)
    assert rescaled((10, 20, 50, 40), 1.0) == (10.0, 20.0, 50.0, 40.0)


@pytest.mark.slow
def test_second_look_keeps_a_detection_when_two_of_three_recrops_read_its_class(exported, monkeypatch):
    from runtime import pipeline
    from runtime.classifier import Detection, Prediction

    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-f32"]), threshold=0.5)
    pipe = pipeline.FramePipeline(clf)
    frame = np.full((200, 300, 3), 90, np.uint8)
    signs = [Detection((10, 10, 50, 50), Prediction(1, "b", 0.9, ())),  # read as 1, 1, 2: kept
             Detection((100, 10, 140, 50), Prediction(2, "c", 0.9, ())),  # 2, unsure, 0: dropped
             Detection((200, 10, 240, 50), Prediction(3, "d", 0.9, ()))]  # 3, 3, 3: kept
    reads = [(1, 0.9), (1, 0.8), (2, 0.9), (2, 0.9), (2, 0.3), (0, 0.9), (3, 0.9), (3, 0.9), (3, 0.9)]
    n = len(clf.class_names)
    seen = []

    def fake_proba(x):
        seen.append(len(x))
        probs = np.zeros((len(reads), n), np.float32)
        for row, (cls, p) in zip(probs, reads):
            row[:] = (1 - p) / (n - 1)
            row[cls] = p
        return probs

    crops = []
    real_crop = pipeline.crop_rois
    monkeypatch.setattr(pipeline, "crop_rois", lambda f, boxes, spec: crops.append(list(boxes)) or real_crop(f, boxes, spec))
    monkeypatch.setattr(clf, "predict_proba", fake_proba)
    kept, dropped, looked = pipe.look_again(frame, signs)
    assert [d.prediction.class_id for d in kept] == [1, 3] and [d.prediction.class_id for d in dropped] == [2]
    assert seen == [9]  # one invoke for every re-crop of the frame
    assert crops[0][:3] == [pipeline.rescaled((10, 10, 50, 50), s) for s in pipeline.SECOND_LOOK_SCALES]
    assert looked == 3 * len(signs)
    assert pipe.look_again(frame, []) == ([], [], 0)


@pytest.mark.slow
def test_second_look_runs_on_proposals_only_and_can_be_turned_off(exported, monkeypatch):
    from runtime import pipeline

    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-f32"]), threshold=0.0)
    frame = np.random.default_rng(3).integers(0, 255, (240, 320, 3), np.uint8)
    looked = []
    real = pipeline.FramePipeline.look_again

    def spy(self, frame_bgr, signs):
        looked.append(len(signs))
        return real(self, frame_bgr, signs)

    monkeypatch.setattr(pipeline.FramePipeline, "look_again", spy)
    given = pipeline.FramePipeline(clf).run(frame, [(10, 10, 60, 60), (100, 100, 150, 150)])
    assert looked == [] and len(given.detections) >= 1 and given.unconfirmed == ()  # boxes the caller gives are kept
    assert given.ms.second_look == 0.0 and "second look" in given.ms.to_dict()
    on = pipeline.FramePipeline(clf).run(frame)
    assert len(looked) == 1
    off = pipeline.FramePipeline(clf, second_look=False).run(frame)
    assert len(looked) == 1 and off.unconfirmed == ()
    assert {d.box for d in on.detections} | {d.box for d in on.unconfirmed} == {d.box for d in off.detections}
