"""Faults a new user meets: shared classifiers, resumed and concurrent runs, stale sidecars, bad files.

Each test here failed on the code before its fix (issue "Reliability: thread safety, honest resume ...").
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import gtsdb
from bench.evaluate import main as eval_main
from export import all as export_all
from export import tflite as export_tflite
from runtime.atomic import folder_lock
from runtime.builds import BUILDS, build_file, sidecar_of
from runtime.classifier import Classifier
from runtime.errors import BuildError
from runtime.pipeline import detect_signs
from runtime.roi import RoiError, load_boxes
from tests import synth
from tests.fixtures import LOOSE_GATE, REPO
from train.__main__ import main as train_main
from train.data import load_dataset


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


# --- 1. a Classifier shared by threads ---------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["tflite-int8", "tflite-f32", "onnx-int8"])
def test_a_classifier_shared_by_four_threads_gives_each_its_own_answer(exported, name):
    clf = Classifier.from_build(build_file(exported, BUILDS[name]))
    rng = np.random.default_rng(0)
    # Distinct inputs of different batch sizes, so a mixed-up answer cannot look right.
    inputs = [rng.standard_normal((1 + i % 3, 16, 16, 3)).astype(np.float32) for i in range(24)]
    expected = [clf.predict_proba(x) for x in inputs]
    failures: list[str] = []

    def worker(offset: int) -> None:
        for k in range(150):
            i = (offset * 7 + k) % len(inputs)
            try:
                got = clf.predict_proba(inputs[i])
            except Exception as err:  # noqa: BLE001 - any error in a thread is a failure to report
                failures.append(f"{type(err).__name__}: {err}")
                return
            if got.shape != expected[i].shape or not np.allclose(got, expected[i]):
                failures.append(f"thread {offset} call {k}: another input's answer")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]


# --- 2. --resume takes the run's own configuration ---------------------------------------------

@pytest.mark.slow
def test_resume_without_flags_continues_the_run_as_it_was_started(kaggle_dir, tmp_path, capsys):
    out = tmp_path / "cifar-run"
    assert train_main(["--data", str(kaggle_dir), "--arch", "cifar", "--img-size", "16", "--epochs", "1",
                       "--batch-size", "16", "--zoom", "0.2", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    # The README's line: no --data, no --arch, no --img-size.
    assert train_main(["--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["arch"] == "cifar" and meta["preprocess"]["normalization"] == "unit" and meta["preprocess"]["size"] == 16
    assert meta["config"]["augment"]["zoom"] == 0.2 and meta["epochs_run"] == 2
    assert Path(meta["dataset"]["path"]) == kaggle_dir.resolve()


@pytest.mark.slow
def test_resume_with_a_conflicting_flag_names_both_values(kaggle_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--data", str(kaggle_dir), "--arch", "cifar", "--img-size", "16", "--epochs", "1",
                       "--batch-size", "16", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert train_main(["--resume", "--out", str(out), "--epochs", "2", "--arch", "edge"]) == 1
    err = _err(capsys)
    assert "--arch edge (the run has cifar)" in err and "\n" not in err
    assert train_main(["--resume", "--out", str(out), "--epochs", "2", "--img-size", "24"]) == 1
    assert "--img-size 24 (the run has 16)" in _err(capsys)
    assert json.loads((out / "metadata.json").read_text())["epochs_run"] == 1  # nothing was changed


def test_img_size_zero_is_refused(kaggle_dir):
    with pytest.raises(SystemExit) as e:
        train_main(["--data", str(kaggle_dir), "--img-size", "0"])
    assert e.value.code == 2


# --- 3. one training per run folder ------------------------------------------------------------

def test_a_second_training_into_a_locked_folder_stops_and_names_the_holder(kaggle_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out, "training edge"):
        assert train_main(["--data", str(kaggle_dir), "--img-size", "16", "--epochs", "1", "--out", str(out), "--quiet"]) == 1
    err = _err(capsys)
    assert "is in use by training edge (pid" in err
    assert not (out / "checkpoints").exists()
    with folder_lock(out, "again"):  # released: it can be taken again, and the lock file is gone after
        pass
    assert list(out.iterdir()) == []


# --- 4. a build beside another build's sidecar -------------------------------------------------

@pytest.mark.slow
def test_a_model_beside_a_stale_sidecar_is_refused(exported, tmp_path):
    int8 = build_file(exported, BUILDS["tflite-int8"])
    dest = tmp_path / int8.name
    shutil.copy(build_file(exported, BUILDS["tflite-dynamic"]), dest)  # same tensors, another model
    shutil.copy(sidecar_of(int8), sidecar_of(dest))
    with pytest.raises(BuildError, match="re-export"):
        Classifier.from_build(dest)


@pytest.mark.slow
def test_export_removes_what_an_interrupted_export_left(exported, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    stale = [run / ".model_int8.tflite.k3j2.part", run / ".model_int8.tflite.k3j2.part.json"]
    for p in stale:
        p.write_bytes(b"half")
    assert export_tflite.main(["--int8", "--run", str(run), "--calib-samples", "120", *LOOSE_GATE]) == 0
    assert not any(p.exists() for p in stale)
    assert not list(run.glob(".*part*"))


# --- 5. ONNX builds carry the calibrated threshold and the verification ------------------------

@pytest.mark.slow
def test_an_onnx_build_without_its_sidecar_keeps_threshold_and_verification(exported, tmp_path):
    import onnx

    build = build_file(exported, BUILDS["onnx-int8"])
    props = json.loads({p.key: p.value for p in onnx.load(str(build)).metadata_props}["signkit"])
    side = json.loads(sidecar_of(build).read_text())
    assert props["threshold"] == side["threshold"] > 0
    assert props["verification"]["passed"] and props["verification"] == side["verification"]
    lone = tmp_path / build.name
    shutil.copy(build, lone)
    assert Classifier.from_build(lone).threshold == side["threshold"]


# --- 6. bench.gtsdb and gt.txt -----------------------------------------------------------------

@pytest.mark.slow
def test_bench_gtsdb_refuses_ground_truth_outside_its_frame_in_one_line(exported, tmp_path, capsys):
    """A box wholly past the frame's right and bottom edges was dropped and scored as a miss, even given the true boxes;
    it is refused, with its line, as one past the left or top edge is."""
    folder = synth.write_gtsdb(tmp_path / "frames", frames=2, seed=4)
    lines = (folder / "gt.txt").read_text().splitlines()
    (folder / "gt.txt").write_text("\n".join(["00000.ppm;900;900;950;950;1", *lines]) + "\n")
    build = build_file(exported, BUILDS["tflite-f32"])
    assert gtsdb.main(["--build", str(build), "--frames", str(folder), "--proposals", "gt", "--threads", "1",
                       "--repeat", "1", "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "gt.txt line 1: box 900,900,950,950 reaches past the" in err and "fix or delete the line" in err


@pytest.mark.parametrize("line, message", [
    ("00000.ppm;50;40;20;60;3", "inverted"),
    ("00000.ppm;-5;40;20;60;3", "negative"),
    ("00000.ppm;20;40;20;60;3", "inverted"),  # zero width
    ("00000.ppm;20;40;30;60;-1", "class id -1"),
    ("00000.ppm;20;40;30;60;43", "class id 43"),
    ("00007.ppm;20;40;30;60;3", "frame 00007.ppm is not in"),
    ("00000.ppm;20;40;30;60", "expected image;left;top;right;bottom;ClassId"),
])
def test_bad_gt_lines_are_rejected_with_their_line_number(tmp_path, line, message):
    from runtime.annotations import frame_files

    cv2.imwrite(str(tmp_path / "00000.jpg"), np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "gt.txt").write_text(f"00000.ppm;10;10;30;30;1\n{line}\n")
    with pytest.raises(RoiError, match=f"line 2: .*{message}"):
        frame_files(tmp_path, num_classes=43)


# --- 7. dataset paths and files ----------------------------------------------------------------

def test_a_csv_path_leaving_the_dataset_is_refused(kaggle_dir, tmp_path):
    from runtime.errors import DatasetFormatError

    root = tmp_path / "k"
    shutil.copytree(kaggle_dir, root)
    rows = (root / "Train.csv").read_text().splitlines()
    rows[3] = rows[3].rsplit(",", 1)[0] + ",../../outside/00001_00000_00000.png"
    (root / "Train.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetFormatError, match="line 4: Path .* leaves the dataset folder"):
        load_dataset(root, use_cache=False, progress=False, size=16)


def test_a_csv_lacking_one_roi_column_is_refused(kaggle_dir, tmp_path):
    from runtime.errors import DatasetFormatError

    root = tmp_path / "k"
    shutil.copytree(kaggle_dir, root)
    text = (root / "Train.csv").read_text().replace("Roi.Y2", "RoiY2")
    (root / "Train.csv").write_text(text)
    with pytest.raises(DatasetFormatError, match="lacks Roi.Y2"):
        load_dataset(root, use_cache=False, progress=False, size=16)


def test_a_repaired_image_is_decoded_again_not_left_out_by_the_cache(kaggle_dir, tmp_path):
    root = tmp_path / "k"
    shutil.copytree(kaggle_dir, root)
    victim = min((root / "Train/2").glob("*.png"))
    good = victim.read_bytes()
    victim.write_bytes(good[:30])  # truncated
    cache = tmp_path / "cache"
    broken = load_dataset(root, cache_dir=cache, progress=False, size=16, max_bad_fraction=0.05)
    victim.write_bytes(good)  # repaired
    repaired = load_dataset(root, cache_dir=cache, progress=False, size=16, max_bad_fraction=0.05)
    assert broken.skipped == 1 and repaired.skipped == 0 and len(repaired) == len(broken) + 1


def test_a_zero_byte_image_is_skipped_and_counted(kaggle_dir, tmp_path, capsys):
    root = tmp_path / "k"
    shutil.copytree(kaggle_dir, root)
    min((root / "Train/1").glob("*.png")).write_bytes(b"")
    split = load_dataset(root, use_cache=False, progress=False, size=16, max_bad_fraction=0.05)
    assert split.skipped == 1
    assert "skipped 1 unreadable image" in capsys.readouterr().err


# --- tracebacks where a one-line error belongs -------------------------------------------------

@pytest.mark.slow
def test_metadata_that_is_not_json_is_one_line(exported, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(exported / "model.keras", run / "model.keras")
    (run / "metadata.json").write_text("{truncated")
    assert eval_main(["--run", str(run), "--split", "val"]) == 1
    assert "metadata.json is not readable JSON" in _err(capsys)
    assert export_tflite.main(["--run", str(run)]) == 1
    assert "metadata.json is not readable JSON" in _err(capsys)


@pytest.mark.slow
@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "is not signkit build metadata"),
    ("{\"format\": \"signkit-build/1\", \"build\": \"tflite-int8\"}", "lacks class_names, preprocess"),
])
def test_a_sidecar_that_is_not_a_build_record(exported, tmp_path, content, message):
    src = build_file(exported, BUILDS["tflite-int8"])
    dest = tmp_path / src.name
    shutil.copy(src, dest)
    meta = json.loads(content)
    if isinstance(meta, dict):
        meta["model_sha256"] = json.loads(sidecar_of(src).read_text())["model_sha256"]
    sidecar_of(dest).write_text(json.dumps(meta))
    with pytest.raises(BuildError, match=message):
        Classifier.from_build(dest)


@pytest.mark.slow
def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(exported, tmp_path, monkeypatch, capsys):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "m_int8.tflite"
    assert export_tflite.main(["--int8", "--run", str(exported), "--out", str(out)]) == 1
    err = _err(capsys)
    assert f"cannot write {out} (No space left on device)" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("frame, message", [
    (None, "frame is None"),
    ([[1, 2, 3]], "numpy array"),
    (np.zeros((40, 40, 3), np.uint16), "must be uint8"),
    (np.zeros((0, 0, 3), np.uint8), "frame is empty"),
    (np.zeros((40, 40, 1), np.uint8), "COLOR_GRAY2BGR"),
])
def test_detect_signs_on_a_frame_that_is_not_an_image(exported, frame, message):
    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"]))
    with pytest.raises(RoiError, match=message):
        detect_signs(clf, frame)


@pytest.mark.slow
def test_nan_and_infinite_boxes_are_skipped_or_raise(exported, tmp_path):
    clf = Classifier.from_build(build_file(exported, BUILDS["tflite-int8"]))
    frame = np.full((60, 80, 3), 100, np.uint8)
    dets = clf.classify_rois(frame, [(float("nan"), 0, 20, 20), (0, 0, float("inf"), 20), (5, 5, 30, 30)])
    assert [d.box for d in dets] == [(5, 5, 30, 30)]
    with pytest.raises(RoiError, match="NaN/infinite"):
        clf.classify_rois(frame, [(float("nan"), 0, 20, 20)], on_invalid="raise")
    (tmp_path / "boxes.json").write_text('[[NaN, 0, 20, 20]]')
    with pytest.raises(RoiError, match="NaN or infinity"):
        load_boxes(tmp_path / "boxes.json")


def test_export_all_help_lists_the_registry(capsys):
    with pytest.raises(SystemExit):
        export_all.main(["--help"])
    out = capsys.readouterr().out
    for spec in BUILDS.values():
        assert spec.name in out and spec.description in out


@pytest.mark.slow
def test_the_run_data_remounted_is_not_called_other_data_a_copy_elsewhere_is_and_other_data_is_refused(
        trained_run, kaggle_webp_dir, tmp_path, capsys):
    """A remount changes every file time (and so the fingerprint): same folder, same images, no warning. A copy
    elsewhere is rebuilt from the recorded indices with a warning; data with other images cannot hold them."""
    import os
    import shutil

    from runtime.errors import ConfigError
    from train.runs import Run

    run = Run.open(trained_run)
    csv = run.data_path / "Train.csv"
    st = csv.stat()
    try:
        os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        run.splits()
        assert "is not the data" not in capsys.readouterr().err
    finally:
        os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns))
    copy = shutil.copytree(run.data_path, tmp_path / "copy")
    _, val = run.splits(copy)
    assert f"warning: {copy} is not the data" in capsys.readouterr().err
    assert np.array_equal(val.labels, run.split("val").labels)
    with pytest.raises(ConfigError, match="has 108 images but .* was trained on 240"):
        run.splits(kaggle_webp_dir)

@pytest.mark.parametrize("argv, module, says", [
    (["--run", "/nope"], "bench.report", "/nope does not exist"),
    (["--build", "/nope.tflite", "--frames", "/tmp"], "bench.gtsdb", "build /nope.tflite not found"),
    (["--data", "/nope"], "train.insight.inspect", "/nope does not exist"),
    (["--frames", "/nope", "--out", "/tmp/x"], "train.frames.sign_map", "/nope does not exist"),
    (["--frames", "/nope"], "train.frames.ranker", "/nope does not exist"),
])
def test_a_missing_input_is_named_as_missing(argv, module, says, capsys):
    import importlib

    assert importlib.import_module(module).main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert says in err and "Traceback" not in err and len(err) < 300


def test_a_channels_first_frame_gets_the_transpose_hint():
    from runtime.classifier import check_frame
    from runtime.roi import RoiError

    with pytest.raises(RoiError, match=r"transpose\(1, 2, 0\)"):
        check_frame(np.zeros((3, 240, 320), np.uint8))
    with pytest.raises(RoiError, match="BGRA2BGR"):
        check_frame(np.zeros((240, 320, 4), np.uint8))


def test_ground_truth_past_the_right_or_bottom_edge_is_refused_like_the_left_or_top(tmp_path):
    """A box past the frame was scored as a miss even with the true boxes as proposals; now it is refused, with the
    line, as a box past the left or top edge always was."""
    from runtime.annotations import frame_files, read_frame
    from runtime.roi import RoiError

    folder = synth.write_gtsdb(tmp_path / "f", frames=2, size=(400, 300))
    with open(folder / "gt.txt", "a") as f:
        f.write("00001.ppm;380;250;420;310;13\n")
    files, gt = frame_files(folder)
    with pytest.raises(RoiError, match=r"gt.txt line \d+: box 380,250,420,310 reaches past the 400x300 frame"):
        read_frame(files["00001"], gt["00001"])


@pytest.mark.slow
def test_the_sign_map_fit_is_quiet_but_for_its_progress(tmp_path):
    """--quiet: no TensorFlow CUDA notes on a CPU machine, and still a line every 5 % of the steps."""
    frames = synth.write_gtsdb(tmp_path / "frames", frames=2, seed=5, size=(640, 560))
    proc = subprocess.run([sys.executable, "-m", "train.frames.sign_map", "--frames", str(frames), "--out", str(tmp_path / "m"),
                           "--steps", "20", "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cuInit" not in proc.stderr and "cuda" not in proc.stderr.lower()
    lines = [line for line in proc.stderr.splitlines() if line.startswith("sign map: step")]
    assert len(lines) == 20  # a line every step of 20 (5 % of them)
    # the time left, at the pace after the first step (which traces the graph); the last says none is left
    assert "left" not in lines[0] and all("min left)" in line for line in lines[1:]) and lines[-1].endswith("about 0 min left)")
