"""Your own signs: class-folder datasets, new classes from a few photos (--extend), and data-parallel training."""

from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest

from runtime.errors import DatasetFormatError
from runtime.preprocess import to_model_input
from tests import synth
from tests.fixtures import LOOSE_GATE
from train.__main__ import main as train_main
from train.data import detect_format, load_dataset
from train.data.formats import FORMATS
from train.runs import Run

NEW = {"Grünes Quadrat": 4, "purple cross": 5}  # unicode, spaces


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = synth.write_folders(tmp_path_factory.mktemp("folders") / "signs", {"Stop": 0, "Vorfahrt ⬦": 3, **NEW}, tracks=4, frames=3)
    # odd extensions and a nested folder
    (root / "Stop" / "night").mkdir()
    img = cv2.imread(str(next((root / "Stop").glob("*.png"))))
    cv2.imwrite(str(root / "Stop" / "night" / "n007_000.JPG"), img)
    cv2.imwrite(str(root / "Stop" / "n008_000.jpeg"), img)
    cv2.imwrite(str(root / "Stop" / "n009_000.bmp"), img)
    return root


def test_class_folders_are_detected_and_read(folders):
    assert detect_format(folders) == "folders" and "folders" in FORMATS
    split = load_dataset(folders, use_cache=False, progress=False, size=16)
    assert split.class_names == ("Grünes Quadrat", "Stop", "Vorfahrt ⬦", "purple cross")  # folder names, sorted
    assert np.bincount(split.labels).tolist() == [12, 15, 12, 12]  # the nested .JPG, the .jpeg and the .bmp are Stop's
    assert split.tracks is not None and len(set(split.tracks)) == 4 * 4 + 3  # <track>_<frame> names
    assert split.rois is not None and (split.rois == -1).all()  # whole images


def test_train_val_test_subfolders_and_boxes_csv(tmp_path):
    root = synth.write_folders(tmp_path / "ds", {"a": 0, "b": 1}, tracks=3, frames=2, splits=("train", "val", "test"))
    img = next((root / "train" / "a").glob("*.png"))
    (root / "train" / "boxes.csv").write_text(f"file,x1,y1,x2,y2,track\na/{img.name},5,5,30,30,sign42\n")
    assert FORMATS["folders"].has_val(root)
    train = load_dataset(root, use_cache=False, progress=False, size=16)
    k = next(i for i, f in enumerate(train.files) if f.endswith(img.name))
    assert tuple(train.rois[k]) == (5, 5, 30, 30) and train.tracks[k] == "a/sign42"
    for subset in ("val", "test"):
        assert len(load_dataset(root, subset=subset, use_cache=False, progress=False, size=16)) == 12
    (root / "train" / "boxes.csv").write_text(f"file,x1,y1,x2,y2\na/{img.name},30,5,5,30\n")
    with pytest.raises(DatasetFormatError, match="boxes.csv line 2: box 30,5,5,30 has no area"):
        load_dataset(root, use_cache=False, progress=False, size=16)


def test_an_empty_class_folder_or_an_unknown_val_class_is_an_error(tmp_path):
    root = synth.write_folders(tmp_path / "ds", {"a": 0, "b": 1}, tracks=2, frames=2, splits=("train", "val"))
    (root / "train" / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match=r"class folder .*empty holds no images"):
        load_dataset(root, use_cache=False, progress=False, size=16)
    (root / "train" / "empty").rmdir()
    shutil.copytree(root / "val" / "a", root / "val" / "zebra")
    with pytest.raises(DatasetFormatError, match="class 'zebra' is not a class of"):
        load_dataset(root, subset="val", use_cache=False, progress=False, size=16)


@pytest.mark.slow
def test_training_on_class_folders_records_the_names(folders, tmp_path, capsys):
    flat = tmp_path / "flat"
    synth.write_folders(flat, {"a": 0, "b": 1}, tracks=4, frames=3)
    for p in flat.rglob("*.png"):  # no track names: a random split, said
        p.rename(p.with_name(f"img{abs(hash(p.name)) % 10**8}.png"))
    assert train_main(["--data", str(flat), "--epochs", "1", "--img-size", "16", "--batch-size", "8", "--out",
                       str(tmp_path / "run"), "--quiet"]) == 0
    assert "random image split" in capsys.readouterr().err
    meta = json.loads((tmp_path / "run/metadata.json").read_text())
    assert meta["class_names"] == ["a", "b"] and meta["dataset"]["format"] == "folders"


@pytest.fixture(scope="module")
def extended(trained_run, tmp_path_factory):
    add = synth.write_folders(tmp_path_factory.mktemp("add") / "new", NEW, tracks=5, frames=2, seed=3)
    out = tmp_path_factory.mktemp("ext") / "run"
    assert train_main(["--extend", str(trained_run), "--add", str(add), "--out", str(out), "--epochs", "3", "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_extend_adds_classes_and_reports_old_and_new(extended, trained_run):
    meta = json.loads((extended / "metadata.json").read_text())
    base = json.loads((trained_run / "metadata.json").read_text())
    assert meta["class_names"] == [*base["class_names"], *NEW]
    ext = meta["extension"]
    assert ext["from"] == str(trained_run.resolve()) and ext["old_classes"]["images"] == base["dataset"]["val_images"]
    assert ext["old_classes"]["accuracy_after"] >= ext["old_classes"]["accuracy_before"] - 0.1  # not forgotten
    run = Run.open(trained_run)  # "before" is the base model as it was saved, not one whose layers trained on since
    val = run.split("val")
    before = run.load_model().predict(to_model_input(val.images, run.preprocess), verbose=0).argmax(1)
    assert ext["old_classes"]["accuracy_before"] == pytest.approx(float((before == val.labels).mean()))
    assert set(ext["new_classes"]) == set(NEW) and all(r["held_out"] == 4 and r["recall"] >= 0.5 for r in ext["new_classes"].values())
    assert meta["config"]["min_per_class"] == 200 and meta["config"]["epochs"] == 3
    summary = (extended / "extension.md").read_text()  # the same figures, for people
    assert f"{100 * ext['old_classes']['accuracy_before']:.2f} % before" in summary
    assert all(f"new class {name}: recall" in summary for name in NEW)


@pytest.mark.slow
def test_extension_before_is_the_saved_base_model_not_the_trained_trunk(trained_run, tmp_path):
    """The grown model shares every layer but the head with the base model object: once it has trained, that
    object is no longer the model "before". The report must score the base as saved."""
    import keras

    from train.config import TrainConfig
    from train.extend import grow_model
    from train.training import _extension

    base = Run.open(trained_run)
    val = base.split("val")
    x = to_model_input(val.images, base.preprocess)
    saved_acc = float((base.load_model().predict(x, verbose=0).argmax(1) == val.labels).mean())
    grown = grow_model(keras, base.load_model(), base.num_classes + 1)
    for layer in grown.layers:  # what training the grown model does to the shared layers, made blatant
        if layer.name != "logits" and layer.get_weights():
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    assert float((base.load_model().predict(x, verbose=0).argmax(1) == val.labels).mean()) != saved_acc  # shared
    cfg = TrainConfig(data=base.data_path, out=tmp_path, init_from=trained_run, add=tmp_path)
    names = (*base.class_names, "new")
    report = _extension(cfg, base, grown, x, dataclasses.replace(val, class_names=names))
    assert report is not None and report["old_classes"]["accuracy_before"] == pytest.approx(saved_acc)


@pytest.mark.slow
def test_an_extended_run_is_an_ordinary_run(extended):
    from export import tflite as export_tflite
    from runtime.builds import BUILDS, build_file
    from runtime.classifier import Classifier

    assert export_tflite.main(["--int8", "--run", str(extended), "--calib-samples", "150", *LOOSE_GATE]) == 0
    clf = Classifier.from_build(build_file(extended, BUILDS["tflite-int8"]))
    assert clf.class_names[-2:] == tuple(NEW)
    val = Run.open(extended).split("val")  # rebuilt: the run's own held-out tracks plus the held-out added photos
    assert set(np.unique(val.labels)) == set(range(6))


@pytest.mark.slow
def test_extend_flags(trained_run, extended, tmp_path, capsys):
    for argv in (["--add", str(tmp_path)], ["--extend", str(trained_run)]):
        with pytest.raises(SystemExit) as e:
            train_main(argv)
        assert e.value.code == 2
    assert train_main(["--extend", str(extended), "--add", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    assert "was itself extended" in capsys.readouterr().err


def test_to_folders_carves_classes_out_with_their_boxes_and_tracks(tmp_path):
    from train.data import to_folders

    src = synth.write_kaggle(tmp_path / "kaggle", tracks_per_class=6, frames=4, seed=2)
    assert to_folders.main(["--data", str(src), "--out", str(tmp_path / "rest"), "--exclude", "1", "--link"]) == 0
    rest = load_dataset(tmp_path / "rest", use_cache=False, progress=False, size=16)
    whole = load_dataset(src, use_cache=False, progress=False, size=16)
    assert rest.class_names == ("class 0", "class 2", "class 3") and len(rest) == (whole.labels != 1).sum()
    k = whole.labels != 1
    np.testing.assert_array_equal(np.sort(rest.images.reshape(len(rest), -1), axis=0),
                                  np.sort(whole.images[k].reshape(int(k.sum()), -1), axis=0))  # same crops: boxes kept
    assert (tmp_path / "rest" / "class 0").is_dir() and all(p.is_symlink() for p in (tmp_path / "rest").rglob("*.png"))
    assert to_folders.main(["--data", str(src), "--out", str(tmp_path / "few"), "--classes", "1", "--photos-per-class", "3"]) == 0
    few = load_dataset(tmp_path / "few", use_cache=False, progress=False, size=16)
    held = load_dataset(tmp_path / "few", subset="val", use_cache=False, progress=False, size=16)
    assert len(few) == 3 and len(set(few.tracks)) == 3 and not set(few.tracks) & set(held.tracks)
    ones = whole.tracks[whole.labels == 1]
    others = {t for t in ones if t.split("_")[-1] not in {f.split("t")[-1] for f in few.tracks}}
    assert len(held) == sum(t in others for t in ones)  # every image of the tracks not picked


def test_to_folders_refuses_too_few_tracks_and_unknown_ids(tmp_path, capsys):
    from train.data import to_folders

    src = synth.write_kaggle(tmp_path / "kaggle", tracks_per_class=3, frames=2, seed=2)
    assert to_folders.main(["--data", str(src), "--out", str(tmp_path / "x"), "--classes", "1", "--photos-per-class", "3"]) == 1
    assert "leaves none to score on" in capsys.readouterr().err
    assert to_folders.main(["--data", str(src), "--out", str(tmp_path / "y"), "--classes", "9"]) == 1
    assert "class id 9" in capsys.readouterr().err
