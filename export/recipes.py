"""How each build of the registry (``runtime.builds.BUILDS``) is made and analysed.

The runtime's registry says what a build is (backend, file suffix, precision); this table, keyed by
the same names, says how export makes one. Adding a build means one entry in each, and
tests/test_export.py checks that the two tables name the same builds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export import convert
from export.metadata import embed_onnx_metadata
from export.report import analyse_onnx, analyse_tflite
from runtime.builds import BUILDS
from runtime.preprocess import PreprocessSpec


@dataclass(frozen=True)
class ConvertJob:
    """What a converter gets: the Keras model, its input spec, calibration inputs and the int8 I/O type."""

    model: Any
    spec: PreprocessSpec
    calib: np.ndarray
    io_dtype: str = "float32"
    keep_float: tuple[str, ...] = ()  # int8 builds: nodes left in float (python -m export.debug --keep-float)


@dataclass(frozen=True)
class Recipe:
    convert: Callable[[ConvertJob, Path], None]  # writes the converted model to the path
    analyse: Callable[[Path], dict[str, Any]]  # op types, integer-only or not
    calibrated: bool  # needs calibration images (and reports the time they took)
    embed: Callable[[Path, dict[str, Any]], None] | None = None  # puts the metadata into the model file itself


def _tflite(precision: str) -> Callable[[ConvertJob, Path], None]:
    def make(job: ConvertJob, out: Path) -> None:
        calib = job.calib if precision == "int8" else None
        out.write_bytes(convert.to_tflite(job.model, precision, calib, job.io_dtype, job.keep_float))

    return make


def _onnx_f32(job: ConvertJob, out: Path) -> None:
    import onnx

    onnx.save(convert.to_onnx(job.model, job.spec.size, job.spec.channels), str(out))


def _onnx_int8(job: ConvertJob, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="signkit-onnx-") as d:
        f32 = Path(d) / "f32.onnx"
        _onnx_f32(job, f32)
        convert.onnx_int8(f32, job.calib, out, job.keep_float)


RECIPES: dict[str, Recipe] = {
    "tflite-f32": Recipe(_tflite("float32"), analyse_tflite, False),
    "tflite-f16": Recipe(_tflite("float16"), analyse_tflite, False),
    "tflite-dynamic": Recipe(_tflite("dynamic"), analyse_tflite, False),
    "tflite-int8": Recipe(_tflite("int8"), analyse_tflite, True),
    "onnx-f32": Recipe(_onnx_f32, analyse_onnx, False, embed_onnx_metadata),
    "onnx-int8": Recipe(_onnx_int8, analyse_onnx, True, embed_onnx_metadata),
}

if set(RECIPES) != set(BUILDS):  # a build in one table and not the other is a programming error
    raise RuntimeError(f"export.recipes and runtime.builds disagree: {sorted(set(RECIPES) ^ set(BUILDS))}")
