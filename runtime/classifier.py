"""Classify sign crops or ROIs of a camera frame with any build: numpy in, frozen dataclasses out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import open_backend
from runtime.builds import BuildSpec, read_metadata, spec_for
from runtime.errors import BuildError
from runtime.preprocess import PreprocessSpec, crop_and_resize, to_model_input

UNKNOWN = -1


@dataclass(frozen=True)
class Prediction:
    """One crop's result; ``class_id`` is ``UNKNOWN`` (-1) when the top score is below the threshold."""

    class_id: int
    label: str
    score: float
    top_k: tuple[tuple[int, str, float], ...]

    @property
    def known(self) -> bool:
        return self.class_id != UNKNOWN


class Classifier:
    """A build opened for inference; everything it needs comes from the build's metadata."""

    def __init__(self, path: Path, meta: dict[str, Any], spec: BuildSpec, threads: int = 1,
                 threshold: float | None = None, top_k: int = 3) -> None:
        self.path = Path(path)
        self.meta = meta
        self.build = spec
        self.preprocess = PreprocessSpec.from_dict(meta["preprocess"])
        self.class_names: tuple[str, ...] = tuple(meta["class_names"])
        self.threshold = float(meta.get("threshold") or 0.0) if threshold is None else float(threshold)
        self.top_k = max(1, min(top_k, len(self.class_names)))
        self.backend = open_backend(self.path, spec.backend, threads)
        self._check_tensors()

    @classmethod
    def from_build(cls, path: str | Path, threads: int = 1, threshold: float | None = None, top_k: int = 3) -> Classifier:
        """Open a .tflite/.onnx build with its metadata.

        Raises:
            BuildError: missing/foreign file, or metadata that does not match the model's tensors.
            BackendUnavailableError: the inference library is not installed (names the pip line).
        """
        path = Path(path)
        if not path.is_file():
            raise BuildError(f"build {path} not found; export one with `python -m export.tflite --int8`")
        meta = read_metadata(path)
        return cls(path, meta, spec_for(path, meta), threads, threshold, top_k)

    def _check_tensors(self) -> None:
        p = self.preprocess
        want = (p.size, p.size, p.channels)
        got = self.backend.input_shape
        if tuple(v for v in got if v != -1) and got != want:
            raise BuildError(f"{self.path}: metadata says input {want} but the model takes {got}; the sidecar belongs "
                             f"to another build, re-export it")
        if self.backend.output_classes not in (-1, len(self.class_names)):
            raise BuildError(f"{self.path}: metadata lists {len(self.class_names)} classes but the model outputs "
                             f"{self.backend.output_classes}; re-export the build")

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for already preprocessed inputs (N, S, S, C) float32."""
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return self.backend.run(np.ascontiguousarray(x, dtype=np.float32))

    def _predictions(self, probs: np.ndarray) -> list[Prediction]:
        order = np.argsort(-probs, axis=1)[:, : self.top_k]
        out = []
        for row, idx in zip(probs, order):
            top = tuple((int(i), self.class_names[i], float(row[i])) for i in idx)
            best, label, score = top[0]
            if score < self.threshold:
                best, label = UNKNOWN, "unknown"
            out.append(Prediction(best, label, score, top))
        return out

    def classify(self, crops: np.ndarray | Sequence[np.ndarray]) -> list[Prediction]:
        """Classify RGB uint8 crops of any size (each is resized as training did)."""
        batch = [crop_and_resize(np.asarray(c), None, self.preprocess) for c in crops]
        if not batch:
            return []
        return self._predictions(self.predict_proba(to_model_input(np.stack(batch), self.preprocess)))
