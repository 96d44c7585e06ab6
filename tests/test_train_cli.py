"""python -m train / bench.evaluate end to end on fixture data, in-process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bench.evaluate import main as eval_main
from train.__main__ import main as train_main

pytestmark = pytest.mark.slow


def test_training_writes_a_complete_run(trained_run):
    for name in ("model.keras", "metadata.json", "history.json", "training_curves.png", "checkpoints/last.keras",
                 "checkpoints/state.json"):
        assert (trained_run / name).is_file(), name
    meta = json.loads((trained_run / "metadata.json").read_text())
    assert meta["arch"] == "edge-xs" and meta["num_classes"] == 4
    assert meta["input"] == {"size": 16, "channels": 3, "dtype": "float32", "colour": "rgb", "layout": "NHWC"}
    assert meta["dataset"]["split"]["kind"] == "track"
    assert meta["epochs_run"] == 4 and meta["params"] > 100_000
    cfg = meta["config"]
    assert cfg["augment"]["zoom"] == 0.2 and cfg["augment"]["shift"] == 0.08  # flag, default
    assert cfg["weight_decay"] == 5e-3 and cfg["augment"]["gamma"] == 0.4 and cfg["img_size"] == 16  # every setting recorded
    hist = json.loads((trained_run / "history.json").read_text())
    assert len(hist["loss"]) == 4 and len(hist["val_accuracy"]) == 4
    assert meta["val_accuracy"] == pytest.approx(max(hist["val_accuracy"]), abs=1e-6)


def test_evaluate_val_and_test(trained_run, capsys):
    meta = json.loads((trained_run / "metadata.json").read_text())
    data = meta["dataset"]["path"]
    assert eval_main(["--run", str(trained_run), "--data", data, "--split", "val", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Re-evaluating the saved model on the rebuilt track split reproduces the accuracy training reported.
    assert report["accuracy"] == pytest.approx(meta["val_accuracy"], abs=1e-6)
    assert len(report["per_class"]) == 4 and (trained_run / "eval-val/confusion.png").is_file()
    assert eval_main(["--run", str(trained_run), "--data", data, "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "confusion matrix" in out
    assert json.loads((trained_run / "eval-test/report.json").read_text())["images"] == 4 * 4  # 4 classes x every other of 8 frames


def test_evaluate_several_splits_skips_a_missing_one_only_when_asked(trained_run, tmp_path, capsys):
    import shutil

    data = shutil.copytree(json.loads((trained_run / "metadata.json").read_text())["dataset"]["path"], tmp_path / "no-test")
    (data / "Test.csv").unlink()  # the same images, without a test subset
    args = ["--run", str(trained_run), "--data", str(data), "--split", "val", "test", "--out", str(tmp_path / "e")]
    assert eval_main([*args, "--skip-missing"]) == 0
    captured = capsys.readouterr()
    assert "val accuracy" in captured.out and "test: not evaluated, the data has no such split" in captured.err
    assert (tmp_path / "e/eval-val/report.json").is_file() and not (tmp_path / "e/eval-test").exists()
    assert eval_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m bench.evaluate: error:") and "Traceback" not in err


def test_model_learns_better_than_chance(trained_run):
    # Four easy synthetic classes: four short epochs are enough to beat guessing (0.25) by far.
    assert json.loads((trained_run / "metadata.json").read_text())["val_accuracy"] >= 0.6


def test_resume_continues_from_last_epoch(kaggle_dir, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--data", str(kaggle_dir), "--img-size", "16", "--batch-size", "16", "--out", str(out), "--quiet"]
    assert train_main([*common, "--epochs", "1"]) == 0
    state = json.loads((out / "checkpoints/state.json").read_text())
    assert state["epoch"] == 1
    assert train_main([*common, "--epochs", "2", "--resume"]) == 0
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["loss"]) == 2  # one epoch from the first run, one resumed
    assert "resuming" in capsys.readouterr().err


def test_other_architectures_build_and_train(kaggle_dir, tmp_path):
    for arch, size in (("lenet", 32), ("notebook-d", 30)):
        assert train_main(["--data", str(kaggle_dir), "--arch", arch, "--epochs", "1", "--img-size", str(size),
                           "--batch-size", "32", "--out", str(tmp_path / arch), "--quiet"]) == 0
        meta = json.loads((tmp_path / arch / "metadata.json").read_text())
        assert meta["input"]["channels"] == (1 if arch == "lenet" else 3)


@pytest.mark.parametrize("arch,size,channels", [("edge", 32, 3), ("notebook-a", 60, 3), ("lenet", 32, 1),
                                                ("cifar", 32, 3), ("notebook-d", 30, 3)])
def test_every_architecture_builds_at_its_default_size(arch, size, channels):
    from train.models import ARCHS, build_model

    model = build_model(arch, size, channels, 43)
    assert model.output_shape == (None, 43)
    probs = model.predict(np.zeros((2, size, size, channels), np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert ARCHS[arch].default_size == size


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def test_img_size_too_small(kaggle_dir, tmp_path, capsys):
    assert train_main(["--data", str(kaggle_dir), "--arch", "notebook-a", "--img-size", "20", "--out", str(tmp_path / "r")]) == 1
    assert "--img-size 20 is too small for --arch notebook-a (minimum 40" in _err(capsys)
    assert not (tmp_path / "r").exists()


def test_missing_data_folder(tmp_path, capsys):
    assert train_main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 1
    assert "does not exist" in _err(capsys)
    assert not (tmp_path / "r").exists()  # nothing written for a run that cannot start


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_not_writable(kaggle_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert train_main(["--data", str(kaggle_dir), "--out", str(ro / "run")]) == 1
    assert "not writable" in _err(capsys)


def test_output_path_is_a_file(kaggle_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train_main(["--data", str(kaggle_dir), "--out", str(blocker / "run")]) == 1
    err = _err(capsys)
    assert "--out" in err and "is not writable" in err


def test_bad_flag_values_exit_2(kaggle_dir):
    with pytest.raises(SystemExit) as e:
        train_main(["--data", str(kaggle_dir), "--epochs", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        train_main(["--data", str(kaggle_dir), "--zoom", "1.5"])
    assert e.value.code == 2


def test_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert eval_main(["--run", str(tmp_path), "--data", str(tmp_path), "--split", "val"]) == 1
    assert "is not a training run" in _err(capsys)


def test_same_command_trains_under_the_torch_backend(kaggle_dir, tmp_path):
    """Backend-agnostic Keras 3 + numpy pipeline: PyTorch trains it, and the file exports like any other."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    from tests.fixtures import REPO

    out = tmp_path / "torch"
    proc = subprocess.run([sys.executable, "-m", "train", "--data", str(kaggle_dir), "--backend", "torch", "--epochs", "1",
                           "--img-size", "16", "--batch-size", "16", "--out", str(out), "--quiet"],
                          cwd=REPO, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["config"]["backend"] == "torch" and meta["epochs_run"] == 1


def test_cli_architecture_choices_match_the_model_registry():
    from train.__main__ import ARCH_NAMES
    from train.models import ARCHS

    assert tuple(ARCHS) == ARCH_NAMES


def test_a_run_recorded_before_the_defaults_changed_keeps_its_old_settings():
    from pathlib import Path

    from train.config import TrainConfig, from_json, to_json

    today = to_json(TrainConfig(data=Path("d"), out=Path("o")))
    assert today["arch"] == "edge-xs" and today["contrast"] == "clahe"
    old = {k: v for k, v in today.items() if k not in ("arch", "contrast")}  # written before either was recorded
    cfg = from_json(old, Path("o"))
    assert cfg.arch == "edge" and cfg.contrast == "none"
    assert from_json(today, Path("o")).contrast == "clahe"
