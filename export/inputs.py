"""What every export needs, loaded once: the run's Keras model, calibration images, the verification set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ConfigError
from runtime.preprocess import PreprocessSpec, to_model_input
from train.data import Split, load_dataset
from train.data.split import balanced_sample
from train.runs import Run
from train.splits import OtherDataError

MIN_CALIB = 100


@dataclass(frozen=True)
class Calibration:
    """Where int8 calibration images come from and how many (class-balanced)."""

    data: Path | None = None  # a dataset folder or .npz of crops+labels; None: the run's own training split
    samples: int = 500
    seed: int = 0


@dataclass
class ExportInputs:
    run: Run
    model: Any  # keras.Model
    calib: np.ndarray  # float32 model inputs, class-balanced sample of training images
    verify_x: np.ndarray  # float32 model inputs of the validation split
    verify_y: np.ndarray
    float_probs: np.ndarray  # the Keras model's probabilities on verify_x

    @property
    def spec(self) -> PreprocessSpec:
        return self.run.preprocess

    @property
    def float_accuracy(self) -> float:
        return float((self.float_probs.argmax(1) == self.verify_y).mean())


def _from_npz(path: Path, spec: PreprocessSpec, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as z:
            if "images" not in z or "labels" not in z:
                raise ConfigError(f"--calib-data {path} must hold 'images' (N,H,W,3 uint8 RGB crops) and 'labels'")
            images, labels = z["images"], z["labels"].astype(np.int64)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--calib-data {path} is not a readable .npz ({err}); pass a dataset folder or np.savez output") from None
    if images.ndim != 4 or images.shape[1:] != (spec.size, spec.size, 3):
        raise ConfigError(f"--calib-data {path} holds {images.shape[1:]} images but the model takes "
                          f"({spec.size}, {spec.size}, 3); resize them or pass a dataset folder")
    if labels.size and (labels.max() >= num_classes or labels.min() < 0):
        raise ConfigError(f"--calib-data {path} has labels outside 0..{num_classes - 1}; it is not this model's data")
    return images, labels


def _from_dataset(run: Run, path: Path) -> tuple[np.ndarray, np.ndarray, Split | None]:
    """Calibration images from a dataset folder: a copy of the run's data gives its training part and its validation
    set; other data (other images of the same classes) gives all of its training images and no validation set."""
    try:
        sets = run.sets(path)
        return sets.train.images, sets.train.labels, sets.val
    except OtherDataError:
        pass
    p = run.preprocess
    other = load_dataset(path, subset="train", size=p.size, margin=p.margin)
    if other.num_classes != run.num_classes:
        raise ConfigError(f"--calib-data {path} has {other.num_classes} classes but the model {run.path} has "
                          f"{run.num_classes}; pass data of the same classes")
    return other.images, other.labels, None


def _sources(run: Run, cal: Path | None) -> tuple[np.ndarray, np.ndarray, Split | None]:
    """The calibration pool (images, labels) and the verification set: the run's own validation split whenever its
    training data is on disk, so a bad calibration set cannot also be the yardstick it is measured with."""
    if cal is not None and not Path(cal).exists():
        raise ConfigError(f"--calib-data {cal} not found; pass a dataset folder or an .npz of crops and labels")
    own = run.sets() if run.data_path.exists() else None
    if cal is None:
        if own is None:
            raise ConfigError(f"the training data {run.data_path} is gone; pass --calib-data a copy of it")
        return own.train.images, own.train.labels, own.val
    if Path(cal).suffix == ".npz":
        images, labels = _from_npz(Path(cal), run.preprocess, run.num_classes)
        return images, labels, own.val if own else None
    images, labels, cal_val = _from_dataset(run, Path(cal))
    return images, labels, own.val if own else cal_val


def load_inputs(run: Run, calibration: Calibration = Calibration(), *, verify_samples: int | None = None,
                need_calibration: bool = True) -> ExportInputs:
    """Load the run's model, a calibration sample of training images and the verification set.

    Raises:
        ConfigError: calibration data missing/too small/of another class count or size; no validation data.
    """
    cal = calibration.data
    pool, labels, verify_set = _sources(run, cal)
    if verify_set is None:
        raise ConfigError(f"no validation data to verify against: {run.data_path} is gone and --calib-data {cal} holds other "
                          f"images; pass --calib-data a copy of the training data (or --no-verify)")
    images = pool[balanced_sample(labels, calibration.samples, calibration.seed)]
    if need_calibration and len(images) < MIN_CALIB:
        raise ConfigError(f"calibration data {cal or run.data_path} has only {len(images)} images; int8 "
                          f"calibration needs at least {MIN_CALIB} (pass --calib-data with more, or raise --calib-samples)")
    ver_images, ver_labels = verify_set.images, verify_set.labels
    if verify_samples is not None and verify_samples < len(ver_labels):
        keep = balanced_sample(ver_labels, verify_samples, calibration.seed + 1)
        ver_images, ver_labels = ver_images[keep], ver_labels[keep]
    model = run.load_model()
    spec = run.preprocess
    verify_x = to_model_input(ver_images, spec)
    float_probs = model.predict(verify_x, batch_size=256, verbose=0)
    return ExportInputs(run, model, to_model_input(images, spec), verify_x, ver_labels, float_probs)
