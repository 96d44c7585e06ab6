"""Distillation: a student learns from a teacher's softened outputs on the same augmented crops, and a teacher that
trained on the student's held-out tracks is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.__main__ import main as train_main
from train.runs import Run

SPLIT = ["--val-fraction", "0.25", "--devtest-fraction", "0.25", "--split-seed", "3", "--quiet"]


def test_the_loss_is_cross_entropy_and_softened_kl_weighted():
    import keras

    from train.models import DistillationLoss

    rng = np.random.default_rng(0)
    student = rng.dirichlet(np.ones(5), 8).astype("float32")
    teacher = rng.dirichlet(np.ones(5), 8).astype("float32")
    labels = rng.integers(0, 5, 8)
    y = np.concatenate([labels[:, None], teacher], axis=1).astype("float32")
    ce = float(np.mean(-np.log(student[np.arange(8), labels])))
    assert float(DistillationLoss(5, 4.0, 0.0)(y, student)) == pytest.approx(ce, rel=1e-5)
    same = np.concatenate([labels[:, None], student], axis=1).astype("float32")
    assert float(DistillationLoss(5, 4.0, 1.0)(same, student)) == pytest.approx(0.0, abs=1e-5)  # KL to itself
    t = 2.0
    soft = lambda p: np.exp(np.log(p) / t) / np.exp(np.log(p) / t).sum(1, keepdims=True)
    kl = np.mean(np.sum(soft(teacher) * (np.log(soft(teacher)) - np.log(soft(student))), axis=1))
    assert float(DistillationLoss(5, t, 1.0)(y, student)) == pytest.approx(t * t * kl, rel=1e-4)
    assert isinstance(keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        DistillationLoss(5, t, 0.5))), DistillationLoss)


@pytest.mark.slow
def test_a_student_learns_from_a_teacher_of_another_size_and_records_it(kaggle_dir, tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert train_main(["--data", str(kaggle_dir), "--arch", "edge-s", "--img-size", "24", "--epochs", "2", "--out",
                       str(teacher), *SPLIT]) == 0
    assert train_main(["--data", str(kaggle_dir), "--img-size", "16", "--epochs", "2", "--teacher", str(teacher),
                       "--distill-temperature", "3", "--out", str(student), *SPLIT]) == 0
    meta = json.loads((student / "metadata.json").read_text())
    t = Run.open(teacher)
    assert meta["teacher"] == {"run": str(teacher.resolve()), "model_sha256": t.model_sha256, "arch": "edge-s", "size": 24,
                               "temperature": 3.0, "weight": 0.9}
    assert meta["config"]["teacher"] == str(teacher.resolve()) and 0 <= meta["val_accuracy"] <= 1
    run = Run.open(student)
    assert run.load_model().output_shape == (None, 4)  # an ordinary run: it loads, exports and evaluates as any
    assert len(run.split("dev-test")) > 0

    leaky = tmp_path / "leaky"  # held out other tracks: it trained on some of the student's
    assert train_main(["--data", str(kaggle_dir), "--img-size", "16", "--epochs", "1", "--out", str(leaky), "--quiet",
                       "--val-fraction", "0.25", "--devtest-fraction", "0.25", "--split-seed", "7"]) == 0
    capsys.readouterr()
    assert train_main(["--data", str(kaggle_dir), "--img-size", "16", "--epochs", "1", "--teacher", str(leaky), "--out",
                       str(tmp_path / "refused"), *SPLIT]) == 1
    err = capsys.readouterr().err
    assert "trained on" in err and "of this run's validation and dev-test images" in err and "Traceback" not in err
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_the_teacher_reads_the_crop_the_student_is_fed(kaggle_dir, tmp_path):
    """Same size: the targets' probabilities are the teacher's on the very batch the student gets."""
    import keras

    from train.config import TrainConfig
    from train.distribute import Distribution
    from train.splits import SplitRule, choose
    from train.training import Teacher, _batches

    teacher = tmp_path / "t"
    assert train_main(["--data", str(kaggle_dir), "--img-size", "16", "--epochs", "1", "--out", str(teacher), *SPLIT]) == 0
    run = Run.open(teacher)
    _, sets = choose(kaggle_dir, "auto", SplitRule(0.25, 0.25, 3, 0), size=16, margin=0.1)
    cfg = TrainConfig(data=kaggle_dir, out=tmp_path, teacher=teacher, img_size=16)
    model = run.load_model()
    batches = _batches(keras, sets.train, run.preprocess, cfg, 0, 8, Distribution("none", 1),
                       Teacher(run, model, sets.train.images, np.zeros((0, 4))))
    x, y = batches[0]
    assert y.shape == (8, 5) and np.allclose(y[:, 1:], model.predict_on_batch(x), atol=1e-5)
