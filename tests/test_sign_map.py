"""The learned "sign here" map: decoding, fitting and its export gate, the runtime runner, the pipeline and bench."""

from __future__ import annotations

import contextlib
import json
import os
import threading

import numpy as np
import pytest

from bench import gtsdb
from export import sign_map as export_map
from runtime.annotations import read_frame
from runtime.builds import BUILDS, build_file
from runtime.classifier import Classifier
from runtime.errors import BuildError, ConfigError
from runtime.pipeline import FramePipeline, ProposalsAhead
from runtime.sign_map import MAP_CUE, MAP_FILE, READ_SIDE, SignMap, decode, map_input
from tests import synth
from train.frames import map_crops
from train.frames import sign_map as fit

DECODING = {"min_score": fit.MIN_SCORE, "top_k": fit.TOP_K, "size_unit": fit.SIZE_UNIT}


def test_decode_takes_local_maxima_above_the_score_with_their_sides():
    out = np.zeros((10, 20, 2), np.float32)
    out[2, 3] = (0.9, 5.0)  # a 32-pixel sign
    out[2, 4] = (0.5, 5.0)  # beside the peak: not a maximum
    out[7, 15] = (0.3, 4.0)  # a 16-pixel sign
    out[5, 10] = (0.04, 6.0)  # below min_score
    boxes, scores = decode(out, stride=4, min_score=0.05, top_k=10, sx=2.0, sy=2.0)
    np.testing.assert_allclose(scores, [0.9, 0.3])
    # the centre between cells: the parabola through 0, 0.9, 0.5 across peaks 0.5 / (2 * 1.3) of a cell to the right
    cx, cy = (3 + 0.5 + 0.5 / 2.6) * 4 * 2, (2 + 0.5) * 4 * 2
    np.testing.assert_allclose(boxes[0], [cx - 16, cy - 16, cx + 16, cy + 16])
    assert (boxes[1][0] + boxes[1][2]) / 2 == (15 + 0.5) * 4 * 2  # an isolated peak: the cell's centre
    assert boxes[1][2] - boxes[1][0] == 16
    assert len(decode(out, 4, 0.05, 1, 1.0, 1.0)[0]) == 1  # top_k
    scaled = out.copy()
    scaled[..., 1] /= 8  # the side as the map learns it, log2 / size_unit
    np.testing.assert_allclose(decode(scaled, 4, 0.05, 10, 2.0, 2.0, size_unit=8)[0], boxes)
    assert decode(np.zeros((4, 4, 2), np.float32), 4, 0.05, 5, 1.0, 1.0)[0].shape == (0, 4)
    # run at 1.25x the scale it was fitted at, a map sees a sign 1.25x larger than it is: its sides are read 0.8x
    at = decode(out, stride=4, min_score=0.05, top_k=10, sx=2.0, sy=2.0, side_scale=0.8)[0]
    np.testing.assert_allclose(at[:, 2] - at[:, 0], (boxes[:, 2] - boxes[:, 0]) * 0.8)
    np.testing.assert_allclose(at[:, :2] + at[:, 2:], boxes[:, :2] + boxes[:, 2:])  # the same centres


def test_a_frame_is_area_averaged_to_a_whole_fraction_of_it_and_bilinear_otherwise():
    import cv2

    frame = np.random.default_rng(0).integers(0, 256, (560, 640, 3), np.uint8)
    np.testing.assert_array_equal(map_input(frame, 320, 280), cv2.resize(frame, (320, 280), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(map_input(frame, 400, 352), cv2.resize(frame, (400, 352), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(map_input(frame, 320, 140), cv2.resize(frame, (320, 140), interpolation=cv2.INTER_LINEAR))


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return synth.write_gtsdb(tmp_path_factory.mktemp("frames"), frames=4, seed=5, size=(640, 560))


@pytest.fixture(scope="module")
def fitted(frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("map") / "run"
    # 100 steps: a map that marks something (its int8 copy is not yet close to it: no gate here)
    fit.fit_sign_map([frames], out, subset="even", steps=100, crop=128, progress=False)
    return export_map.export_sign_map(out, min_agreement=0.0)


def test_fitted_map_is_written_with_what_it_was_fitted_on(fitted, frames):
    from runtime.annotations import annotations_fingerprint

    text = fitted.with_name(fitted.name + ".json").read_text()
    meta = json.loads(text)
    assert meta["format"] == "signkit-signmap/1"
    assert meta["fitted_on"] == [{"gt_sha256": annotations_fingerprint(frames), "frames": ["00000", "00002"]}]
    assert meta["input"] == [280, 320, 3] and meta["scale"] == meta["fit_scale"] == 0.5 and meta["stride"] == fit.STRIDE and meta["params"] > 0 and meta["macs"] > 0
    assert meta["size_unit"] == fit.SIZE_UNIT
    assert str(frames) not in text and str(fitted.parent) not in text  # no path of this machine travels with the map
    assert (fitted.parent / "sign_map.keras").is_file() and (fitted.parent / "fit.json").is_file()
    m = SignMap(fitted)
    assert m.fitted_on == meta["fitted_on"]
    frame = read_frame(frames / "00001.jpg")
    props = m.propose(frame)
    assert all(p.cue == MAP_CUE and 0 <= p.box[0] < p.box[2] <= 640 and 0 <= p.box[1] < p.box[3] <= 560 for p in props)
    other = np.ascontiguousarray(frame[::2, ::3])  # another frame size: resized to the map's input, boxes mapped back
    assert all(p.box[2] <= other.shape[1] and p.box[3] <= other.shape[0] for p in m.propose(other))


def test_the_pipeline_adds_the_maps_proposals(fitted, frames, exported):
    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"]))
    m = SignMap(fitted)
    frame = read_frame(frames / "00001.jpg")
    plain = FramePipeline(clf).propose(frame).rois
    both = FramePipeline(clf, sign_map=m).propose(frame).rois
    learned = tuple(m.propose(frame))
    assert learned and both == plain + learned
    result = FramePipeline(clf, sign_map=m).run(frame)
    assert result.rois == both


def test_run_ahead_the_map_runs_on_the_classifiers_thread_with_the_same_result(fitted, frames, exported):
    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"]))
    m = SignMap(fitted)
    pipe = FramePipeline(clf, sign_map=m)
    frame = read_frame(frames / "00001.jpg")
    colour = pipe.propose(frame, learned=False)
    assert colour.small is not None and colour.rois == FramePipeline(clf).propose(frame).rois
    plain = pipe.run(frame)
    threads = []
    real = m.propose

    def traced(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    m.propose = traced  # type: ignore[method-assign]
    ahead = ProposalsAhead(pipe)
    try:
        ahead.submit(0, frame)
        overlapped = pipe.run(frame, proposed=ahead.take(0))
    finally:
        ahead.close()
    assert threads == [threading.current_thread().name]  # not the proposal thread's
    assert overlapped.rois == plain.rois and overlapped.detections == plain.detections
    assert overlapped.ms.proposals > 0


def test_bench_gtsdb_leaves_out_the_frames_that_fitted_the_map(fitted, frames, exported, capsys):
    build = build_file(exported, BUILDS["tflite-int8"])
    assert gtsdb.main(["--build", str(build), "--frames", str(frames), "--sign-map", str(fitted), "--proposals", "builtin",
                       "--threads", "1", "--repeat", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "leaving out 2 frames" in captured.err and json.loads(captured.out)[0]["frames"] == 2
    assert gtsdb.main(["--build", str(build), "--frames", str(frames), "--sign-map", str(fitted), "--subset", "even",
                       "--proposals", "builtin", "--threads", "1", "--repeat", "1"]) == 1
    assert "sign map" in capsys.readouterr().err


def test_a_stale_or_foreign_sidecar_is_refused(fitted, exported, tmp_path):
    stale = tmp_path / "map.tflite"
    stale.write_bytes(fitted.read_bytes() + b"\0")
    stale.with_name(stale.name + ".json").write_text(fitted.with_name(fitted.name + ".json").read_text())
    with pytest.raises(BuildError, match="SHA-256 differs"):
        SignMap(stale)
    with pytest.raises(BuildError, match="not a sign-map sidecar"):
        SignMap(build_file(exported, BUILDS["tflite-int8"]))
    with pytest.raises(BuildError, match="not found"):
        SignMap(tmp_path / "none.tflite")


def test_the_export_gate_refuses_and_writes_nothing(frames, tmp_path, capsys):
    out = tmp_path / "run"
    fit.fit_sign_map([frames], out, steps=2, crop=128, progress=False)
    with pytest.raises(BuildError, match="not written"):
        export_map.export_sign_map(out, min_agreement=1.01)
    assert not (out / MAP_FILE).exists() and not list(out.glob("*.tflite"))
    assert export_map.main(["--map", str(tmp_path)]) == 1  # no fitted map there: one line naming the fit command
    err = capsys.readouterr().err
    assert "holds no fitted sign map" in err and "python -m train.frames.sign_map" in err and "Traceback" not in err


def test_a_map_exported_at_another_scale_takes_that_frame_size_and_reads_its_sides_at_it(fitted, frames):
    half = SignMap(fitted)  # the fixture's: the fit's own scale
    frame = read_frame(frames / "00001.jpg")
    half_boxes = [p.box for p in half.propose(frame)]
    larger = export_map.export_sign_map(fitted.parent, min_agreement=0.0, scale=0.625)
    meta = json.loads(larger.with_name(larger.name + ".json").read_text())
    # 0.625 of the 640x560 frames: 350 x 400, down to multiples of 8 as the fit sizes its input
    assert meta["input"] == [344, 400, 3] and meta["scale"] == 0.625 and meta["fit_scale"] == 0.5
    m = SignMap(larger)
    assert m.side_scale == pytest.approx(0.8 * READ_SIDE) and half.side_scale == READ_SIDE and m.macs > half.macs * 1.4  # 1.25^2 the pixels
    assert all(0 <= p.box[0] < p.box[2] <= 640 and 0 <= p.box[1] < p.box[3] <= 560 for p in m.propose(frame))
    again = export_map.export_sign_map(fitted.parent, min_agreement=0.0)  # back to the default, as the fixture made it
    assert again.read_bytes() == fitted.read_bytes() and [p.box for p in SignMap(again).propose(frame)] == half_boxes
    with pytest.raises(SystemExit) as e:
        export_map.main(["--map", str(fitted.parent), "--scale", "2"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        export_map.main(["--map", str(fitted.parent), "--band-scale", "0.1"])
    assert e.value.code == 2


def test_a_map_fitted_at_another_scale_sees_the_frame_at_it_and_exports_at_it_by_default(frames, tmp_path):
    assert fit.map_size((800, 1360), 0.5) == (400, 680) and fit.map_size((800, 1360), 0.62) == (496, 840)
    out = tmp_path / "run"
    fit.fit_sign_map([frames], out, subset="even", steps=2, crop=128, progress=False, scale=0.75)
    assert json.loads((out / "fit.json").read_text())["scale"] == 0.75
    built = export_map.export_sign_map(out, min_agreement=0.0)
    meta = json.loads(built.with_name(built.name + ".json").read_text())
    # 0.75 of the 640x560 frames: 420 x 480, down to multiples of 8
    assert meta["input"] == [416, 480, 3] and meta["scale"] == meta["fit_scale"] == 0.75
    m = SignMap(built)
    assert m.side_scale == READ_SIDE
    assert all(0 <= p.box[0] < p.box[2] <= 640 and 0 <= p.box[1] < p.box[3] <= 560
               for p in m.propose(read_frame(frames / "00001.jpg")))
    with pytest.raises(SystemExit) as e:
        fit.main(["--frames", str(frames), "--out", str(tmp_path / "o"), "--scale", "0.1"])
    assert e.value.code == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    small = synth.write_gtsdb(tmp_path / "small", frames=2)  # 480x320: too small for 256-pixel crops at half size
    assert fit.main(["--frames", str(small), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "too small" in err and "Traceback" not in err
    assert fit.main(["--frames", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "has no gt.txt" in capsys.readouterr().err
    assert fit.main(["--frames", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        fit.main(["--frames", str(small), "--out", str(tmp_path / "o"), "--steps", "0"])
    assert e.value.code == 2


def test_bench_misses_counts_the_maps_boxes(fitted, frames, capsys):
    from bench import misses

    plain = misses.diagnose(frames)
    with_map = misses.diagnose(frames, sign_map=fitted)
    assert with_map.fitted == {"00000", "00002"} and not plain.fitted
    best = {(f.frame, f.class_id, f.side): f.best_iou for f in plain.fates}
    assert all(f.best_iou >= best[(f.frame, f.class_id, f.side)] for f in with_map.fates)  # more candidates, never fewer
    assert misses.main(["--frames", str(frames), "--sign-map", str(fitted)]) == 0
    assert "fitted the build's background class, the ranker or the sign map" in capsys.readouterr().out


def test_negatives_mined_with_the_map_take_its_sign_free_boxes_first(fitted, frames, tmp_path):
    from runtime.annotations import frame_files
    from runtime.roi import iou_matrix
    from train.frames import negatives

    out = tmp_path / "neg"
    assert negatives.main(["--frames", str(frames), "--out", str(out), "--subset", "odd", "--per-frame", "30",
                           "--sign-map", str(fitted), "--quiet"]) == 0
    manifest = json.loads((out / "negatives.json").read_text())
    assert manifest["sign_maps"] == [str(fitted.resolve())] and manifest["fitted_on"][0]["frames"] == ["00001", "00003"]
    _, gt = frame_files(frames)
    m, taken = SignMap(fitted), 0
    for stem in manifest["fitted_on"][0]["frames"]:
        chosen = [tuple(c["box"]) for c in manifest["crops"] if c["frame"] == stem]
        signs = [a.box for a in gt.get(stem, [])]
        assert chosen and (not signs or iou_matrix(chosen, signs).max() < 0.1)
        mapped = {tuple(p.box) for p in m.propose(read_frame(frames / f"{stem}.jpg"))}
        from_map = [b in mapped for b in chosen]
        n = sum(from_map)
        assert from_map == [True] * n + [False] * (len(chosen) - n)  # the map's boxes come before all others
        taken += n
    assert taken > 0


def test_each_frame_is_mined_with_a_map_that_did_not_fit_it(fitted, frames, tmp_path):
    import shutil

    from train.frames import negatives

    odd = tmp_path / "odd" / fitted.name  # the same network, its sidecar saying it was fitted on the odd frames
    odd.parent.mkdir()
    shutil.copy(fitted, odd)
    meta = json.loads(fitted.with_name(fitted.name + ".json").read_text())
    fitted_odd = [{**meta["fitted_on"][0], "frames": ["00001", "00003"]}]
    (odd.parent / (odd.name + ".json")).write_text(json.dumps({**meta, "fitted_on": fitted_odd}))
    manifest = negatives.mine([frames], tmp_path / "neg", per_frame=10, progress=False, sign_maps=[fitted, odd])
    used = {c["frame"]: c["sign_map"] for c in manifest["crops"]}
    assert used == {"00000": 1, "00001": 0, "00002": 1, "00003": 0}
    alone = negatives.mine([frames], tmp_path / "neg1", per_frame=10, progress=False, sign_maps=[fitted])
    assert {c["sign_map"] for c in alone["crops"]} == {0}  # every map saw the frame: the first one, as asked


def test_the_gate_holds_the_int8_map_to_the_signs_the_float_map_finds():
    def out(peaks):
        m = np.zeros((12, 12, 2), np.float32)
        for y, x, score, side in peaks:
            m[y, x] = (score, np.log2(side) / fit.SIZE_UNIT)
        return m

    meta = {**DECODING, "stride": 4}
    signs = np.array([[0.0, 0.0, 32.0, 32.0], [16.0, 16.0, 48.0, 48.0]])  # two signs, centred on cells (4, 4), (8, 8)
    ref = out([(4, 4, 0.6, 32), (8, 8, 0.3, 32), (1, 10, 0.9, 16)])  # both found, and a peak on the background
    assert export_map.signs_kept(ref, ref, signs, meta) == (2, 2)
    assert export_map.signs_kept(ref, out([(4, 4, 0.6, 32), (8, 8, 0.3, 32)]), signs, meta) == (2, 2)  # the background's peak lost: no matter
    assert export_map.signs_kept(ref, out([(4, 4, 0.5, 32), (8, 8, 0.3, 64)]), signs, meta) == (1, 2)  # twice the side: IoU 0.25
    assert export_map.signs_kept(ref, out([]), signs, meta) == (0, 2)
    assert export_map.signs_kept(out([(4, 4, 0.6, 32)]), ref, signs, meta) == (1, 1)  # only what the float map finds counts
    assert export_map.signs_kept(ref, ref, np.zeros((0, 4)), meta) == (0, 0)


def _solid_pool(n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(150, 256, (n, 1, 1, 3)).astype(np.uint8).repeat(48, 1).repeat(48, 2)


def test_pasted_signs_are_marked_where_they_land_and_never_on_a_sign():
    img = np.full((128, 128, 3), 40, np.uint8)
    t = np.zeros((128 // fit.STRIDE, 128 // fit.STRIDE, 3), np.float32)
    map_crops.mark_sign(t, 20.0, 20.0, 16.0)  # a sign already there
    before = img.copy()
    n = map_crops.paste_signs(np.random.default_rng(3), img, t, _solid_pool(), 4)
    assert n >= 1 and t[..., 2].sum() == n + 1
    centres = np.argwhere(t[..., 2] == 1) * fit.STRIDE
    for cy, cx in centres:
        if (cy, cx) == (20, 20):
            continue
        assert np.hypot(cy - 20, cx - 20) > 16  # not on the sign that was there
        assert img[cy, cx].astype(int).sum() > before[cy, cx].astype(int).sum()  # the bright sign is there now
        side = 2 ** (t[cy // fit.STRIDE, cx // fit.STRIDE, 1] * fit.SIZE_UNIT) * fit.SCALE
        assert map_crops.PASTE_SIDES[0] - 1 <= side <= map_crops.PASTE_SIDES[1] + 1
    changed = np.argwhere((img != before).any(axis=2))
    far = np.min([np.hypot(*(changed - c).T) for c in centres], axis=0)
    assert far.max() < map_crops.PASTE_SIDES[1]  # pixels change only around what was pasted


def test_batches_drawn_ahead_on_a_thread_are_those_drawn_in_turn(monkeypatch):
    from runtime.annotations import Annotation

    smalls = [np.random.default_rng(k).integers(0, 255, (96, 128, 3), np.uint8) for k in range(3)]
    signs = [[Annotation((40, 20, 60, 40), 3)], [], [Annotation((10, 10, 30, 30), 1)]]
    pool = np.full((4, 48, 48, 3), 200, np.uint8)
    args = (smalls, signs, 64, 4, pool, 1.0, 0.25, True, 1.0)
    turn = np.random.default_rng(7)
    in_turn = [(*map_crops.crops(turn, *args), turn.bit_generator.state) for _ in range(6)]
    ahead = list(map_crops.crop_batches(np.random.default_rng(7), 6, *args))
    assert len(ahead) == 6
    for (x, y, state), (xa, ya, state_a) in zip(in_turn, ahead):
        assert np.array_equal(x, xa) and np.array_equal(y, ya) and state == state_a  # a checkpoint resumes after it
    monkeypatch.setattr(map_crops, "paste_signs", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # an error while drawing is the fit's error
        list(map_crops.crop_batches(np.random.default_rng(7), 6, *args))


@pytest.mark.parametrize("scale", [0.5, 0.625])
def test_training_crops_mark_their_signs_where_they_are_zoomed_and_mirrored(scale):
    from runtime.annotations import Annotation

    small = np.zeros((96, 128, 3), np.uint8)
    small[30:50, 70:90] = 255  # a 20-pixel sign on the frame at ``scale``; its annotation is in frame pixels
    small[30:50, 80:90, 0] = 0  # its right half another colour: mirrored crops show it on the left
    signs = [[Annotation(tuple(round(v / scale) for v in (70, 30, 90, 50)), 3)]]
    rng = np.random.default_rng(0)
    sides, mirrored = [], 0
    for _ in range(40):
        xs, ys = map_crops.crops(rng, [small], signs, 64, 1, zoom=0.3, flip=True, scale=scale)
        patch, t = xs[0].mean(axis=2), ys[0]
        if t[..., 2].sum() == 0:
            continue  # the sign's centre fell outside this crop
        assert t[..., 2].sum() == 1
        cy, cx = np.argwhere(t[..., 2] == 1)[0]
        rows, cols = np.nonzero(patch > 0.2)  # the background stays under 0.1
        if min(rows.min(), cols.min()) == 0 or max(rows.max(), cols.max()) == 63:
            continue  # cut by the crop's edge
        assert abs(cols.mean() / fit.STRIDE - cx - 0.5) <= 1 and abs(rows.mean() / fit.STRIDE - cy - 0.5) <= 1
        side = 2 ** (t[cy, cx, 1] * fit.SIZE_UNIT) * scale  # learned in frame pixels; in the crop's, as it shows it
        assert abs(side - (cols.max() - cols.min() + 1)) <= 2.5
        sides.append(side)
        blue = xs[0][..., 0]
        mirrored += int(blue[rows, cols][cols < cols.mean()].mean() < blue[rows, cols][cols > cols.mean()].mean())
    assert len(sides) > 10 and max(sides) / min(sides) > 1.3  # zoomed: the sign comes in several sizes
    assert 0.2 < mirrored / len(sides) < 0.8  # about half of them mirrored


def test_a_map_fitted_with_pasted_signs_records_them(frames, kaggle_dir, tmp_path):
    path = fit.fit_sign_map([frames], tmp_path / "run", steps=3, crop=128, paste=kaggle_dir, paste_rate=2, progress=False)
    pasted = json.loads((path / "fit.json").read_text())["pasted"]
    assert pasted["images"] > 0 and pasted["rate"] == 2 and pasted["fingerprint"] and pasted["source"] == str(kaggle_dir)
    assert pasted["sampling"] == "images"


@contextlib.contextmanager
def killed_in_step(step: int, monkeypatch):
    """A fit inside it is interrupted (as by Ctrl-C) while it draws the crops of its ``step``-th step."""
    crops, made = map_crops.crops, []

    def killed(*args, **kwargs):
        made.append(1)
        if len(made) == step:
            raise KeyboardInterrupt
        return crops(*args, **kwargs)

    monkeypatch.setattr(map_crops, "crops", killed)
    try:
        yield
    finally:
        monkeypatch.setattr(map_crops, "crops", crops)


def test_a_fit_with_pasted_signs_resumes_on_a_copy_of_them_but_not_on_other_signs(frames, kaggle_dir, tmp_path,
                                                                                  monkeypatch, capsys):
    import shutil

    import cv2

    out = tmp_path / "cut"
    with killed_in_step(3, monkeypatch), pytest.raises(KeyboardInterrupt):
        fit.fit_sign_map([frames], out, steps=4, crop=128, paste=kaggle_dir, progress=False)
    copy = shutil.copytree(kaggle_dir, tmp_path / "copy")  # new files' times: another dataset fingerprint
    for f in copy.rglob("*.png"):
        os.utime(f, ns=(f.stat().st_mtime_ns + 10**9,) * 2)
    other = shutil.copytree(kaggle_dir, tmp_path / "other")
    for f in other.rglob("*.png"):
        cv2.imwrite(str(f), 255 - cv2.imread(str(f)))
    with pytest.raises(ConfigError, match=r"other settings \(paste"):
        fit.fit_sign_map([frames], out, steps=4, crop=128, paste=other, progress=False, resume=True)
    capsys.readouterr()
    fit.fit_sign_map([frames], out, steps=4, crop=128, paste=copy, progress=False, resume=True)
    assert "resuming" in capsys.readouterr().err and (out / "sign_map.keras").is_file()
    built = export_map.export_sign_map(out, min_agreement=0.0)
    sidecars = [f.read_text() for f in built.parent.glob("*.tflite.json")]
    assert sidecars and all(json.loads(t)["pasted"]["pixels"] and str(copy) not in t for t in sidecars)  # no machine path


def test_the_paste_pool_is_drawn_from_images_or_evenly_from_classes():
    labels = np.repeat([0, 1, 2], [90, 6, 4])
    assert np.array_equal(map_crops.pool_indices(labels, 30, 0), np.sort(np.random.default_rng(0).permutation(100)[:30]))
    even = map_crops.pool_indices(labels, 30, 0, "classes")
    assert len(even) == 30 and len(set(even.tolist())) == 30 and np.all(np.diff(even) > 0)
    assert np.bincount(labels[even]).tolist() == [20, 6, 4]  # all of the two small classes, the rest from the large one
    assert np.bincount(labels[map_crops.pool_indices(labels, 9, 1, "classes")], minlength=3).tolist() == [3, 3, 3]
    with pytest.raises(ConfigError, match="sampling"):
        map_crops.pool_indices(labels, 9, 0, "tracks")


def test_paste_errors_are_one_line(frames, tmp_path, capsys):
    assert fit.main(["--frames", str(frames), "--out", str(tmp_path / "o"), "--paste", str(tmp_path / "none"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "none" in err and "Traceback" not in err and not (tmp_path / "o" / "fit.json").exists()
    for rate in ("9", "0"):  # 0 would load the signs and paste none of them
        with pytest.raises(SystemExit) as e:
            fit.main(["--frames", str(frames), "--out", str(tmp_path / "o"), "--paste", str(frames), "--paste-rate", rate])
        assert e.value.code == 2 and "--paste-rate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a sampling without signs to sample would change nothing, silently
        fit.main(["--frames", str(frames), "--out", str(tmp_path / "o"), "--paste-sampling", "classes"])
    assert e.value.code == 2 and "--paste SIGNS" in capsys.readouterr().err


def test_a_budget_reads_the_maps_boxes_and_the_best_colour_proposals_not_on_them(fitted, frames, exported):
    from runtime.pipeline import Budget

    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"]))
    m = SignMap(fitted)
    frame = read_frame(frames / "00001.jpg")
    full = FramePipeline(clf, sign_map=m).propose(frame).rois
    mapped = [r for r in full if r.cue == MAP_CUE]
    capped = FramePipeline(clf, sign_map=m, budget=Budget(colour=2, map_boxes=3)).propose(frame).rois
    colour = [r for r in capped if r.cue != MAP_CUE]
    assert [r for r in capped if r.cue == MAP_CUE] == mapped[:3] and len(colour) <= 2
    from runtime.roi import iou_matrix

    if colour and mapped[:3]:
        assert iou_matrix([c.box for c in colour], [r.box for r in mapped[:3]]).max() < 0.3  # none on a map box
    result = FramePipeline(clf, sign_map=m, budget=Budget(colour=2, map_boxes=3)).run(frame)
    assert result.cost.crops == len(result.rois) <= 5 and result.cost.map_macs == m.macs > 0
    alone = FramePipeline(clf, sign_map=m, budget=Budget(colour=0, map_boxes=3)).run(frame)
    assert [r.box for r in alone.rois] == [r.box for r in mapped[:3]] and alone.cost.colour_pixels == 0  # no colour stage


def test_the_band_is_where_the_small_signs_are():
    rng = np.random.default_rng(0)
    centres = np.column_stack([rng.uniform(300, 1000, 100), rng.uniform(400, 500, 100)])
    small = np.column_stack([centres - 10, centres + 10])  # 20-pixel signs
    large = np.array([[0.0, 0.0, 100.0, 100.0], [1200.0, 700.0, 1300.0, 790.0]])  # far from the band: not counted
    band = export_map.fit_band([small[:50], large, small[50:]], (800, 1360))
    assert band is not None
    x1, y1, x2, y2 = (v * n for v, n in zip(band, (1360, 800, 1360, 800)))
    lo, hi = np.percentile(centres, export_map.BAND_PERCENTILES, axis=0)
    m = export_map.BAND_MARGIN
    assert np.allclose([x1, y1, x2, y2], [lo[0] - m, lo[1] - m, hi[0] + m, hi[1] + m], atol=0.1)
    inside = (centres[:, 0] >= x1) & (centres[:, 0] <= x2) & (centres[:, 1] >= y1) & (centres[:, 1] <= y2)
    assert inside.all()
    edge = export_map.fit_band([np.array([[0.0, 0.0, 20.0, 20.0]] * 30)], (800, 1360))
    assert edge == (0.0, 0.0, round(58 / 1360, 4), round(58 / 800, 4))  # grown, but not past the frame
    assert export_map.fit_band([small[:export_map.BAND_MIN_SIGNS - 1], large], (800, 1360)) is None  # too few to say


@pytest.fixture(scope="module")
def banded(fitted, tmp_path_factory):
    """The fixture's map exported again with a band (the synthetic frames' few signs are 28-44 pixels: all count)."""
    import shutil

    folder = tmp_path_factory.mktemp("banded") / "map"
    folder.mkdir()
    for name in ("sign_map.keras", "fit.json"):
        shutil.copy(fitted.parent / name, folder / name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_map, "BAND_MIN_SIGNS", 2)
        mp.setattr(export_map, "BAND_SIDE", 64)
        return export_map.export_sign_map(folder, min_agreement=0.0)


def test_a_map_carries_its_band_and_the_budget_reads_its_boxes(banded, fitted, frames, exported):
    from runtime.pipeline import Budget
    from runtime.sign_map import BAND_CUE, BAND_FILE

    meta = json.loads(banded.with_name(banded.name + ".json").read_text())
    band_file = banded.with_name(BAND_FILE)
    band_meta = json.loads(band_file.with_name(BAND_FILE + ".json").read_text())
    assert meta["band"]["file"] == BAND_FILE
    # the map runs at the scale it was fitted at (0.5), the band larger
    assert meta["scale"] == 0.5 and band_meta["scale"] == 0.5 * export_map.BAND
    x1, y1, x2, y2 = band_meta["region"]
    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 and (x2 - x1) * (y2 - y1) < 1
    assert band_meta["input"][2] == 3 and all(v % 8 == 0 for v in band_meta["input"][:2])
    m, plain = SignMap(banded), SignMap(fitted)
    assert plain.band is None and m.band is not None and m.band.region == tuple(band_meta["region"])
    frame = read_frame(frames / "00001.jpg")
    assert m.side_scale == READ_SIDE and m.band.side_scale == pytest.approx(READ_SIDE / export_map.BAND)
    assert [p.box for p in m.propose(frame)] == [p.box for p in plain.propose(frame)]  # the same map over the frame
    px1, py1, px2, py2 = (round(v * n) for v, n in zip(m.band.region, (640, 560, 640, 560)))
    band_props = m.band.propose(frame, top_k=20)
    assert band_props and all(p.cue == BAND_CUE for p in band_props)
    for p in band_props:  # in frame pixels, around a centre inside the band
        cx, cy = (p.box[0] + p.box[2]) / 2, (p.box[1] + p.box[3]) / 2
        assert px1 - 1 <= cx <= px2 + 1 and py1 - 1 <= cy <= py2 + 1
    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"]))
    both = FramePipeline(clf, sign_map=m, budget=Budget(colour=0, map_boxes=3, band_boxes=2)).run(frame)
    assert [r.box for r in both.rois] == [p.box for p in m.propose(frame, top_k=3) + band_props[:2]]
    assert both.cost.map_macs == m.macs + m.band.macs and 0 < m.band.macs < m.macs * 2
    alone = FramePipeline(clf, sign_map=m, budget=Budget(colour=0, map_boxes=3, band_boxes=0)).run(frame)
    assert all(r.cue == MAP_CUE for r in alone.rois) and alone.cost.map_macs == m.macs
    ahead = ProposalsAhead(FramePipeline(clf, sign_map=m, budget=Budget(colour=0, map_boxes=3, band_boxes=2)))
    try:  # the band runs where the map runs when the proposals are made ahead
        ahead.submit(0, frame)
        overlapped = ahead.pipeline.run(frame, proposed=ahead.take(0))
    finally:
        ahead.close()
    assert overlapped.rois == both.rois and overlapped.cost.map_macs == both.cost.map_macs


def test_a_replaced_or_missing_band_is_refused_and_an_export_without_one_removes_it(banded, tmp_path):
    import shutil

    from runtime.sign_map import BAND_FILE

    copy = tmp_path / "map"
    shutil.copytree(banded.parent, copy)
    band = copy / BAND_FILE
    band.write_bytes(band.read_bytes() + b"\0")
    with pytest.raises(BuildError, match="SHA-256 differs"):
        SignMap(copy / banded.name)
    band.unlink()
    with pytest.raises(BuildError, match="band .* is missing"):
        SignMap(copy / banded.name)
    shutil.copy(banded.parent / BAND_FILE, band)
    built = export_map.export_sign_map(copy, min_agreement=0.0, band_scale=0)
    assert SignMap(built).band is None and not band.exists() and not (copy / (BAND_FILE + ".json")).exists()


@pytest.mark.slow
def test_a_bundle_carries_the_parts_runs_alone_and_refuses_a_replaced_part(banded, frames, exported, tmp_path, capsys):
    from camera_demo import __main__ as demo_cli
    from export import bundle as bundle_cli
    from runtime.bundle import Bundle
    from runtime.sign_map import BAND_FILE

    fitted = banded  # a map with its band: the band travels with it
    out = tmp_path / "bundle"
    assert bundle_cli.main(["--run", str(exported), "--sign-map", str(fitted), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"bundle.json", "model_int8.tflite", "model_int8.tflite.json", "proposal_ranker.json", fitted.name,
            fitted.name + ".json", BAND_FILE, BAND_FILE + ".json"} == names
    assert json.loads((out / "bundle.json").read_text())["parts"]["sign_map_band"]["file"] == BAND_FILE
    for f in out.glob("*.json"):
        assert str(exported) not in f.read_text() and str(frames) not in f.read_text()  # no path of this machine
    pipe = Bundle.open(out).pipeline()
    assert pipe.sign_map is not None and pipe.classifier.path == out / "model_int8.tflite"
    assert pipe.sign_map.band is not None and pipe.sign_map.band.path == out / BAND_FILE
    # the bundle alone scores as its parts given one by one
    assert gtsdb.main(["--build", str(out), "--frames", str(frames), "--proposals", "builtin", "--threads", "1",
                       "--repeat", "1", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)[0]
    assert gtsdb.main(["--build", str(build_file(exported, BUILDS["tflite-int8"])), "--frames", str(frames),
                       "--sign-map", str(fitted), "--proposals", "builtin", "--threads", "1", "--repeat", "1", "--json"]) == 0
    parts = json.loads(capsys.readouterr().out)[0]
    assert {k: alone[k] for k in ("frames", "precision", "recall", "proposal_recall")} == \
        {k: parts[k] for k in ("frames", "precision", "recall", "proposal_recall")}
    assert demo_cli.main(["--build", str(out), "--source", str(frames), "--headless", "--max-frames", "2"]) == 0
    # a bundle meant for the Pi runs at the pi profile's budget unless told otherwise: no colour stage, <= 10 map boxes
    pi = tmp_path / "bundle-pi"
    assert bundle_cli.main(["--run", str(exported), "--sign-map", str(fitted), "--profile", "pi", "--out", str(pi)]) == 0
    from runtime.pipeline import PROFILES

    assert Bundle.open(pi).profile == PROFILES["pi"] and Bundle.open(out).profile == PROFILES["full"]
    assert bundle_cli.main(["--run", str(exported), "--profile", "pi", "--out", str(tmp_path / "no-map")]) != 0
    assert "there is no sign map" in capsys.readouterr().err and not (tmp_path / "no-map").exists()  # it would find nothing
    capsys.readouterr()
    map_gmacs = {}
    for profile in ([], ["--profile", "full"], ["--profile", "pi-fast"]):
        assert gtsdb.main(["--build", str(pi), "--frames", str(frames), "--proposals", "builtin", "--threads", "1",
                           "--repeat", "1", "--json", *profile]) == 0
        scored = json.loads(capsys.readouterr().out)[0]
        map_gmacs[tuple(profile)] = scored["cost"]["map_gmacs"]
        if profile == ["--profile", "full"]:
            assert scored["cost"]["crops"] == alone["cost"]["crops"]  # --profile full reads every proposal again
        else:
            assert scored["cost"]["crops"] <= 10 and scored["cost"]["gmacs"] < alone["cost"]["gmacs"]
    band = Bundle.open(pi).pipeline().sign_map.band  # type: ignore[union-attr]
    assert map_gmacs[()] - map_gmacs[("--profile", "pi-fast")] == pytest.approx(band.macs / 1e9)  # pi-fast: no band
    assert demo_cli.main(["--build", str(out), "--sign-map", str(fitted), "--source", str(frames), "--headless"]) == 1
    assert "carries its own ranker and sign map" in capsys.readouterr().err
    (out / "proposal_ranker.json").write_text((out / "proposal_ranker.json").read_text() + " ")
    with pytest.raises(BuildError, match="not the ranker bundle.json names"):
        Bundle.open(out)


@pytest.mark.slow
def test_bench_misses_diagnoses_a_bundle_at_its_profile(banded, frames, exported, tmp_path, capsys):
    """bench.misses --build BUNDLE reads the bundle's own parts at its profile's budget: what `pi` leaves unread is cut."""
    from bench import misses
    from export import bundle as bundle_cli
    from runtime.bundle import Bundle
    from runtime.pipeline import PROFILES

    pi = tmp_path / "bundle-pi"
    assert bundle_cli.main(["--run", str(exported), "--sign-map", str(banded), "--profile", "pi", "--out", str(pi)]) == 0
    parts = gtsdb.parts_of(pi)
    assert parts.budget == PROFILES["pi"].budget and parts.sign_map == Bundle.open(pi).part("sign_map")
    kw = {"build": parts.build, "ranker": parts.ranker, "sign_map": parts.sign_map}
    full = misses.diagnose(frames, **kw, budget=PROFILES["full"].budget)
    low = misses.diagnose(frames, **kw, budget=parts.budget)
    assert len(low.fates) == len(full.fates) > 0 and low.fitted == full.fitted != set()
    read = set(misses.STAGES) - {"cut", "near", "none"}  # a proposal the classifier read
    assert sum(f.reason in read for f in low.fates) <= sum(f.reason in read for f in full.fates)
    assert sum(f.reason == "cut" for f in low.fates) >= sum(f.reason == "cut" for f in full.fates)
    assert {f.cue for f in low.false} <= {"map", "band"}  # pi runs no colour stage
    capsys.readouterr()
    assert misses.main(["--frames", str(frames), "--build", str(pi), "--json"]) == 0  # the bundle's own profile: pi
    assert [f["reason"] for f in json.loads(capsys.readouterr().out)] == [f.reason for f in low.fates]
    assert misses.main(["--frames", str(frames), "--build", str(pi), "--profile", "full"]) == 0
    out = capsys.readouterr().out
    assert f"{pi} (--profile full) on " in out and f"{len(full.false)} false detections" in out
    assert misses.main(["--frames", str(frames), "--build", str(pi), "--sign-map", str(banded)]) == 1
    assert "carries its own ranker and sign map" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        misses.main(["--frames", str(frames), "--profile", "pi"])
    assert e.value.code == 2


@pytest.mark.slow
def test_the_report_scores_frames_with_the_runs_own_bundle(fitted, frames, exported, tmp_path):
    """bench.report --frames reads the run's bundle (its ranker and sign map) and shows crops and G MACs a frame."""
    import shutil

    from bench import report
    from export import bundle as bundle_cli
    from train.runs import Run

    run = tmp_path / "run"
    shutil.copytree(exported, run)
    scores, note = report.frame_scores(Run.open(run), frames, repeat=1)
    assert "colour cues," in note and all(s["crops"] > 0 for s in scores.values())
    assert bundle_cli.main(["--run", str(run), "--sign-map", str(fitted), "--out", str(run / "bundle")]) == 0
    mapped, note = report.frame_scores(Run.open(run), frames, repeat=1)
    assert "sign map" in note and set(mapped) == set(scores)
    assert mapped["tflite-int8"]["gmacs"] > scores["tflite-int8"]["gmacs"]  # the map's multiply-accumulates count


def test_a_fit_cut_short_resumes_to_the_weights_of_one_that_was_not(frames, tmp_path, monkeypatch, capsys):
    import keras

    def weights(out):
        return keras.saving.load_model(out / "sign_map.keras", compile=False).get_weights()

    whole = fit.fit_sign_map([frames], tmp_path / "whole", steps=20, crop=128, progress=False)  # a checkpoint every 2 steps
    cut = tmp_path / "cut"
    with killed_in_step(14, monkeypatch), pytest.raises(KeyboardInterrupt):
        fit.fit_sign_map([frames], cut, steps=20, crop=128, progress=False)
    state = json.loads((cut / "checkpoint" / "state.json").read_text())
    assert state["step"] == 12 and sorted(p.name for p in (cut / "checkpoint").iterdir()) == ["map-12.keras", "state.json"]
    assert not (cut / "sign_map.keras").exists()
    capsys.readouterr()
    # a fresh fit into it, or one with other settings, would lose it: refused in one line
    assert fit.main(["--frames", str(frames), "--out", str(cut), "--steps", "20", "--quiet"]) == 1
    assert "unfinished fit" in capsys.readouterr().err
    assert fit.main(["--frames", str(frames), "--out", str(cut), "--steps", "30", "--quiet", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "other settings (steps 20 -> 30; crop 128 -> 256)" in err and "Traceback" not in err

    fit.fit_sign_map([frames], cut, steps=20, crop=128, progress=False, resume=True)
    assert "resuming" in capsys.readouterr().err
    assert not (cut / "checkpoint").exists()
    for a, b in zip(weights(whole), weights(cut)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert json.loads((cut / "fit.json").read_text())["settings"] == json.loads((whole / "fit.json").read_text())["settings"]
    before = (cut / "sign_map.keras").stat().st_mtime_ns
    fit.fit_sign_map([frames], cut, steps=20, crop=128, progress=False, resume=True)
    assert "nothing to do" in capsys.readouterr().err and (cut / "sign_map.keras").stat().st_mtime_ns == before
