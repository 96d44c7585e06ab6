"""What every export needs, loaded once: the Keras model, calibration images, the verification set."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ConfigError
from runtime.preprocess import PreprocessSpec, to_model_input
from train.data import Split
from train.evaluate import read_run
from train.runs import latest_run, load_keras_model

MIN_CALIB = 100


@dataclass
class ExportInputs:
    run_dir: Path
    meta: dict[str, Any]
    spec: PreprocessSpec
    model: Any  # keras.Model
    calib: np.ndarray  # float32 model inputs, class-balanced sample of training images
    verify_x: np.ndarray  # float32 model inputs of the validation split
    verify_y: np.ndarray
    float_probs: np.ndarray  # the Keras model's probabilities on verify_x
    source_sha256: str

    @property
    def float_accuracy(self) -> float:
        return float((self.float_probs.argmax(1) == self.verify_y).mean())


def resolve_model_dir(model: Path | None) -> Path:
    """``--model`` or, without it, the most recent training run (and say which one)."""
    if model is not None:
        read_run(model)
        return model
    run = latest_run()
    print(f"using the most recent training run: {run}", file=sys.stderr)
    return run


def balanced_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices with the classes as equally represented as the data allows."""
    rng = np.random.default_rng(seed)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)}
    picked: list[int] = []
    while len(picked) < n and any(per_class.values()):
        for c in list(per_class):
            if per_class[c] and len(picked) < n:
                picked.append(per_class[c].pop())
    return np.sort(np.asarray(picked, dtype=np.int64))


def _from_npz(path: Path, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        if "images" not in z or "labels" not in z:
            raise ConfigError(f"--calib-data {path} must hold 'images' (N,H,W,3 uint8 RGB crops) and 'labels'")
        images, labels = z["images"], z["labels"].astype(np.int64)
    if images.ndim != 4 or images.shape[1:] != (spec.size, spec.size, 3):
        raise ConfigError(f"--calib-data {path} holds {images.shape[1:]} images but the model takes "
                          f"({spec.size}, {spec.size}, 3); resize them or pass a dataset folder")
    return images, labels


def _dataset_splits(meta: dict[str, Any], data: Path, spec: PreprocessSpec, same_as_training: bool) -> tuple[Split, Split]:
    from train.training import config_from_metadata, split_train_val

    cfg = config_from_metadata(meta, data, same_data=same_as_training)
    train_set, val_set, _ = split_train_val(data, cfg, spec.size)
    if train_set.num_classes != meta["num_classes"]:
        raise ConfigError(f"--calib-data {data} has {train_set.num_classes} classes but the model has {meta['num_classes']}; "
                          f"calibrate on the data the model was trained on")
    return train_set, val_set


def load_inputs(model_dir: Path, *, calib_data: Path | None = None, calib_samples: int = 500,
                verify_samples: int | None = None, seed: int = 0, need_calibration: bool = True) -> ExportInputs:
    """Load the run, a calibration sample of training images and the verification set.

    Verification always uses the run's own validation split when its training data is on disk, so a
    bad ``calib_data`` cannot also be the yardstick it is measured with.

    Raises:
        ConfigError: no model, calibration data missing/too small/of another class count or size.
    """
    meta = read_run(model_dir)
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    num_classes = meta["num_classes"]
    train_data = Path(meta["dataset"]["path"])
    if calib_data is not None and not Path(calib_data).exists():
        raise ConfigError(f"--calib-data {calib_data} not found; pass a dataset folder or an .npz of crops and labels")
    if calib_data is None and not train_data.exists():
        raise ConfigError(f"the training data {train_data} is gone; pass --calib-data a copy of it")
    own = _dataset_splits(meta, train_data, spec, True) if train_data.exists() else None
    verify_set = own[1] if own else None
    if calib_data is not None and Path(calib_data).suffix == ".npz":
        images, labels = _from_npz(Path(calib_data), spec)
        if labels.size and (labels.max() >= num_classes or labels.min() < 0):
            raise ConfigError(f"--calib-data {calib_data} has labels outside 0..{num_classes - 1}; it is not this model's data")
    else:
        cal_train, cal_val = own if calib_data is None else _dataset_splits(meta, Path(calib_data), spec, False)
        images, labels = cal_train.images, cal_train.labels
        if verify_set is None:
            verify_set = cal_val
    if verify_set is None:
        raise ConfigError(f"no validation data to verify against: {train_data} is gone; pass --calib-data a dataset folder")
    calib_images = images[balanced_sample(labels, calib_samples, seed)]
    if need_calibration and len(calib_images) < MIN_CALIB:
        raise ConfigError(f"calibration data {calib_data or train_data} has only {len(calib_images)} images; int8 "
                          f"calibration needs at least {MIN_CALIB} (pass --calib-data with more, or raise --calib-samples)")
    ver_images, ver_labels = verify_set.images, verify_set.labels
    if verify_samples is not None and verify_samples < len(ver_labels):
        keep = balanced_sample(ver_labels, verify_samples, seed + 1)
        ver_images, ver_labels = ver_images[keep], ver_labels[keep]

    model = load_keras_model(model_dir / "model.keras")
    verify_x = to_model_input(ver_images, spec)
    float_probs = model.predict(verify_x, batch_size=256, verbose=0)
    digest = hashlib.sha256((model_dir / "model.keras").read_bytes()).hexdigest()
    return ExportInputs(model_dir, meta, spec, model, to_model_input(calib_images, spec), verify_x, ver_labels,
                        float_probs, digest)
