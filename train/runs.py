"""Training runs on disk: where they live, which is the latest, and one handle on a run folder.

A run folder (``python -m train --out RUN``) holds model.keras, metadata.json, history.json,
checkpoints/ and, once exported, its builds (model_int8.tflite + sidecar, ...). :class:`Run` is the
one object export, evaluation, threshold calibration, bench and the insight tools open it through.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from runtime.builds import BUILDS, build_file, file_sha256
from runtime.errors import ConfigError
from runtime.preprocess import PreprocessSpec
from train.data import Split, load_dataset
from train.data.split import balanced_sample
from train.device import gpu_available
from train.splits import Sets, SplitRecord, assemble

MODEL_FORMAT = "signkit-model/1"
REQUIRED_KEYS = ("arch", "class_names", "num_classes", "preprocess", "dataset")


def runs_dir() -> Path:
    return Path(os.environ.get("SIGNKIT_RUNS", "runs"))


def new_run_dir(arch: str) -> Path:
    return runs_dir() / f"{arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_run(root: Path | None = None, require: str = "model.keras") -> Path:
    """The most recently written run under ``root`` holding ``require``."""
    root = root or runs_dir()
    runs = [p.parent for p in root.glob(f"*/{require}")] if root.is_dir() else []
    if not runs:
        raise ConfigError(f"no trained model found under {root}/; train one with `python -m train` or pass --run DIR")
    return max(runs, key=lambda p: (p / require).stat().st_mtime)


def load_keras_model(path: Path) -> Any:
    """``keras.models.load_model`` with a one-line error for a file that is not a Keras model."""
    gpu_available(os.environ.get("KERAS_BACKEND", "tensorflow"))  # start the backend without its CUDA noise
    import keras

    import train.models  # noqa: F401 - registers the custom losses a saved model may name
    try:
        return keras.models.load_model(path)
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is not a loadable Keras model ({str(err).splitlines()[0][:100]}); "
                          f"retrain it with `python -m train` or pass --run another run") from None


def read_json(path: Path, fix: str) -> Any:
    """A JSON file, or a one-line ConfigError naming it and ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not readable JSON ({err}); {fix}") from None


@dataclass
class Run:
    """A finished training run on disk: its metadata, model, data splits and builds."""

    path: Path
    meta: dict[str, Any]
    _model: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path) -> Run:
        """Raises ConfigError when ``path`` is not a complete run."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path} does not exist; pass --run a folder written by `python -m train` (runs/ holds them)")
        if not (path / "model.keras").is_file() or not (path / "metadata.json").is_file():
            raise ConfigError(f"{path} is not a training run (needs model.keras and metadata.json); pass --run a "
                              f"folder written by `python -m train`")
        meta = read_json(path / "metadata.json", "retrain the run or restore the file")
        if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
            raise ConfigError(f"{path / 'metadata.json'} is not signkit run metadata; pass --run a folder written by "
                              f"`python -m train`")
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise ConfigError(f"{path / 'metadata.json'} lacks {', '.join(missing)}; retrain the run")
        return cls(path, meta)

    @classmethod
    def resolve(cls, path: Path | None) -> Run:
        """``--run`` or, without it, the most recent training run (and say which one)."""
        if path is not None:
            return cls.open(path)
        run = latest_run()
        print(f"using the most recent training run: {run}", file=sys.stderr)
        return cls.open(run)

    @classmethod
    def of_build(cls, build: Path, build_meta: dict[str, Any]) -> Run:
        """The run a build was exported from: beside the build, else where its metadata says, checked by SHA-256."""
        want = (build_meta.get("float_model") or {}).get("sha256")
        recorded = (build_meta.get("float_model") or {}).get("path")
        places = [Path(build).parent] + ([Path(recorded).parent] if recorded else [])
        for place in places:
            if (place / "model.keras").is_file() and (place / "metadata.json").is_file():
                run = cls.open(place)
                if want and run.model_sha256 == want:
                    return run
        raise ConfigError(f"cannot find the training run {build} was exported from (a model.keras with SHA-256 "
                          f"{str(want)[:12]}..., looked in {', '.join(map(str, dict.fromkeys(places)))}); pass --run RUN")

    @property
    def model_file(self) -> Path:
        return self.path / "model.keras"

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.meta["preprocess"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def data_path(self) -> Path:
        return Path(self.meta["dataset"]["path"])

    @property
    def background_class(self) -> int | None:
        return (self.meta.get("background") or {}).get("class_id")

    @cached_property
    def model_sha256(self) -> str:
        return file_sha256(self.model_file)

    @cached_property
    def macs_per_roi(self) -> int:
        """Multiply-accumulates of one crop through the model (``train.models.count_macs``)."""
        from train.models import count_macs  # imports Keras: only where a model is loaded anyway

        return count_macs(self.load_model())

    def load_model(self) -> Any:
        """The Keras model (loaded once)."""
        if self._model is None:
            self._model = load_keras_model(self.model_file)
        return self._model

    @cached_property
    def split_record(self) -> SplitRecord:
        """Which images the run held out (RUN/split.json), as training chose them."""
        return SplitRecord.read(self.path)

    def sets(self, data: Path | None = None, fmt: str = "auto", *, progress: bool = False) -> Sets:
        """The run's training, validation and dev-test sets, rebuilt from its record.

        ``data`` another copy of the dataset (default: the recorded path); a warning when it is not the
        data the run was trained on, whose "validation" images may then have been trained on.
        """
        p = self.preprocess
        sets = assemble(self.path, self.split_record, size=p.size, margin=p.margin, data=data, fmt=fmt, progress=progress)
        if sets.train.num_classes != self.num_classes:
            raise ConfigError(f"{data or self.data_path} has {sets.train.num_classes} classes but the model {self.path} has "
                              f"{self.num_classes}; pass the dataset it was trained on")
        return sets

    def splits(self, data: Path | None = None, fmt: str = "auto", *, progress: bool = False) -> tuple[Split, Split]:
        """The run's training and validation sets (see :meth:`sets`)."""
        sets = self.sets(data, fmt, progress=progress)
        return sets.train, sets.val

    def split(self, name: str, data: Path | None = None, fmt: str = "auto", *, progress: bool = False) -> Split:
        """An evaluation split: "val" (the run's own held-out tracks), "dev-test" (tracks held out from validation as
        well, ``--devtest-fraction``), or "test" (the dataset's test subset)."""
        p = self.preprocess
        if name == "test":
            source = self.data_path if data is None else Path(data)
            return load_dataset(source, fmt, subset="test", size=p.size, margin=p.margin, progress=progress)
        if name not in ("val", "dev-test"):
            raise ConfigError(f"unknown split {name!r}; choose val, dev-test or test")
        sets = self.sets(data, fmt, progress=progress)
        if name == "dev-test" and not len(sets.devtest):
            raise ConfigError(f"{self.path} holds out no dev-test tracks; train with --devtest-fraction 0.1")
        return sets.val if name == "val" else sets.devtest

    def calibration_sample(self, n: int, seed: int = 0, data: Path | None = None) -> np.ndarray:
        """Up to ``n`` class-balanced uint8 RGB training crops (int8 calibration)."""
        train_set, _ = self.splits(data)
        return train_set.images[balanced_sample(train_set.labels, n, seed)]

    def build_path(self, name: str) -> Path:
        return build_file(self.path, BUILDS[name])

    def builds(self) -> dict[str, Path]:
        """The registry's builds exported beside this run, by name."""
        return {name: self.build_path(name) for name in BUILDS if self.build_path(name).is_file()}

