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
from runtime.proposals import Proposal
from runtime.roi import Box, RoiError, clamp_box

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


@dataclass(frozen=True)
class Detection:
    """A box of a frame (clamped to it), what the classifier says it shows, and where the box came from."""

    box: Box
    prediction: Prediction
    proposal: Proposal | None = None  # the proposal's cue and score; None for boxes given to classify_rois


def check_frame(frame: object) -> None:
    """Reject frames the pipeline cannot crop, with the fix in the message."""
    if frame is None:
        raise RoiError("frame is None: the camera or file gave no image (cv2.imread returns None for unreadable files)")
    if not isinstance(frame, np.ndarray):
        raise RoiError(f"frame must be a numpy array, not {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise RoiError(f"frame must be uint8 (8-bit BGR, as cv2.imread/VideoCapture give), got {frame.dtype}; "
                       f"convert with frame.astype(np.uint8) after scaling to 0..255")
    if frame.ndim != 3 or frame.shape[2] != 3:
        if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
            hint = "cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)"
        elif frame.ndim == 3 and frame.shape[2] == 4:
            hint = "cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)"
        elif frame.ndim == 3 and frame.shape[0] in (1, 3, 4):
            hint = "frame.transpose(1, 2, 0) (it is channels-first)"
        else:
            hint = "an image of height x width x 3 (BGR, as cv2.imread gives)"
        raise RoiError(f"frame must be HxWx3 BGR, got shape {frame.shape}; convert with {hint}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise RoiError(f"frame is empty (shape {frame.shape}); the camera or file gave no pixels")


def crop_rois(frame_bgr: np.ndarray, boxes: Sequence[Sequence[float]], spec: PreprocessSpec, *,
              on_invalid: str = "skip") -> tuple[list[int], list[Box], np.ndarray]:
    """Clamp the boxes to a (checked) BGR frame and crop+preprocess each.

    Returns:
        (indices of the usable boxes in ``boxes``, those boxes clamped, the model input batch).
    """
    if on_invalid not in ("skip", "raise"):
        raise ValueError("on_invalid must be 'skip' or 'raise'")
    h, w = frame_bgr.shape[:2]
    index: list[int] = []
    kept: list[Box] = []
    for i, box in enumerate(boxes):
        if len(box) != 4:
            raise RoiError(f"box {tuple(box)} is not (x1, y1, x2, y2)")
        clamped = clamp_box(box, w, h)
        if clamped is None:
            if on_invalid == "raise":
                raise RoiError(f"box {tuple(box)} has no area inside the {w}x{h} frame (or a NaN/infinite coordinate)")
            continue
        index.append(i)
        kept.append(clamped)
    if not kept:
        return [], [], np.zeros((0, spec.size, spec.size, spec.channels), np.float32)
    crops = np.stack([crop_and_resize(frame_bgr, b, spec, order="bgr") for b in kept])
    return index, kept, to_model_input(crops, spec)


class Classifier:
    """A build opened for inference; everything it needs comes from the build's metadata."""

    def __init__(self, path: Path, meta: dict[str, Any], spec: BuildSpec, threads: int = 1,
                 threshold: float | None = None, top_k: int = 3) -> None:
        self.path = Path(path)
        self.meta = meta
        self.build = spec
        try:
            self.preprocess = PreprocessSpec.from_dict(meta["preprocess"])
        except (TypeError, ValueError, AttributeError) as err:
            raise BuildError(f"{path}: the metadata's preprocess section is invalid ({err}); re-export the build") from None
        self.class_names: tuple[str, ...] = tuple(meta["class_names"])
        self.threshold = float(meta.get("threshold") or 0.0) if threshold is None else float(threshold)
        # A model trained with a "not a sign" class answers it for background regions: report those as unknown.
        self.background_class: int | None = meta.get("background_class")
        self.top_k = max(1, min(top_k, len(self.class_names)))
        self.macs_per_crop = int(meta.get("macs_per_roi") or 0)  # 0: a build exported before export recorded it
        self.threads = threads
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

    def predictions(self, probs: np.ndarray) -> list[Prediction]:
        """Turn probability rows into Predictions (top-k, and "unknown" below the threshold)."""
        order = np.argsort(-probs, axis=1)[:, : self.top_k]
        out = []
        for row, idx in zip(probs, order):
            top = tuple((int(i), self.class_names[i], float(row[i])) for i in idx)
            best, label, score = top[0]
            if score < self.threshold or best == self.background_class:
                best, label = UNKNOWN, "unknown"
            out.append(Prediction(best, label, score, top))
        return out

    def classify(self, crops: np.ndarray | Sequence[np.ndarray]) -> list[Prediction]:
        """Classify RGB uint8 crops of any size (each is resized as training did)."""
        batch = [crop_and_resize(np.asarray(c), None, self.preprocess) for c in crops]
        if not batch:
            return []
        return self.predictions(self.predict_proba(to_model_input(np.stack(batch), self.preprocess)))

    def prepare_rois(self, frame_bgr: np.ndarray, boxes: Sequence[Sequence[float]], *,
                     on_invalid: str = "skip") -> tuple[list[Box], np.ndarray]:
        """Clamp the boxes to the frame and crop+preprocess each: (usable boxes, model input batch)."""
        check_frame(frame_bgr)
        _, kept, x = crop_rois(frame_bgr, boxes, self.preprocess, on_invalid=on_invalid)
        return kept, x

    def classify_rois(self, frame_bgr: np.ndarray, boxes: Sequence[Sequence[float]], *,
                      on_invalid: str = "skip") -> list[Detection]:
        """Crop every box of a BGR frame (plus the training margin) and classify them in one invoke.

        Args:
            frame_bgr: uint8 HxWx3 frame as OpenCV delivers it.
            boxes: ``(x1, y1, x2, y2)`` boxes; parts outside the frame are clipped.
            on_invalid: "skip" drops boxes with no area inside the frame (or NaN/infinite ones), "raise" raises RoiError.

        Returns:
            one Detection per usable box, in input order.
        """
        kept, x = self.prepare_rois(frame_bgr, boxes, on_invalid=on_invalid)
        return [Detection(b, p) for b, p in zip(kept, self.predictions(self.predict_proba(x)))]


def ms_per_roi(path: Path, x: np.ndarray, number: int = 300) -> float:
    """Milliseconds per call of ``x`` (one ROI) through a build on one thread: the median of five ``timeit`` runs."""
    import timeit

    clf = Classifier.from_build(path, threads=1)
    clf.predict_proba(x)
    return 1000 * float(np.median(timeit.Timer(lambda: clf.predict_proba(x)).repeat(repeat=5, number=number))) / number
