"""Compile one build: convert, write to a temp file, verify through the runtime, then rename."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from export import convert
from export.inputs import ExportInputs
from export.report import analyse_onnx, analyse_tflite
from export.threshold import DEFAULT_MAX_REJECT, pick_threshold
from export.verify import Gate, Verification, predict_all, verify_build
from runtime.atomic import atomic_path, ensure_writable_dir, publish
from runtime.backends import open_backend
from runtime.builds import BUILDS, METADATA_FORMAT, BuildSpec, build_file, sidecar_of
from runtime.classifier import Classifier
from runtime.errors import ConfigError

TFLITE_PRECISION = {"float32": "float32", "float16": "float16", "dynamic-range": "dynamic", "int8": "int8"}


@dataclass
class BuildResult:
    spec: BuildSpec
    path: Path | None  # None when the gate rejected it
    size_kb: float
    seconds: float
    calibration_seconds: float | None
    verification: Verification | None
    analysis: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.verification is None or self.verification.passed

    def report_entry(self) -> dict[str, Any]:
        return {"build": self.spec.name, "file": str(self.path) if self.path else None, "quantized": self.spec.quantized,
                "precision": self.spec.precision, "size_kb": self.size_kb, "export_seconds": round(self.seconds, 2),
                "calibration_seconds": None if self.calibration_seconds is None else round(self.calibration_seconds, 2),
                "analysis": self.analysis, "verification": self.verification.to_dict() if self.verification else None}


def build_metadata(inputs: ExportInputs, spec: BuildSpec, io: dict[str, Any]) -> dict[str, Any]:
    p = inputs.spec
    return {
        "format": METADATA_FORMAT,
        "build": spec.name,
        "backend": spec.backend,
        "precision": spec.precision,
        "quantized": spec.quantized,
        "class_names": inputs.meta["class_names"],
        "num_classes": inputs.meta["num_classes"],
        "input": {"shape": [-1, p.size, p.size, p.channels], "layout": "NHWC", "colour": p.colour,
                  "camera_order": "frames are BGR (OpenCV); runtime converts to RGB", **io["input"]},
        "output": {"kind": "probabilities", **io["output"]},
        "preprocess": p.to_dict(),
        "threshold": 0.0,
        "background_class": (inputs.meta.get("background") or {}).get("class_id"),
        "background_frames": (inputs.meta.get("background") or {}).get("frames", []),
        "background_frames_gt_sha256": (inputs.meta.get("background") or {}).get("frames_gt_sha256"),
        "float_model": {"path": str(inputs.run_dir / "model.keras"), "sha256": inputs.source_sha256,
                        "arch": inputs.meta["arch"], "val_accuracy": inputs.meta["val_accuracy"]},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _quant(q: tuple[float, int]) -> dict[str, float] | None:
    return {"scale": float(q[0]), "zero_point": int(q[1])} if q and q[0] else None


def _io(backend: Any) -> dict[str, Any]:
    return {"input": {"dtype": backend.input_dtype.name, "quantization": _quant(backend.input_quant)},
            "output": {"dtype": backend.output_dtype.name, "quantization": _quant(backend.output_quant)}}


def _convert(inputs: ExportInputs, spec: BuildSpec, tmp: Path, io_dtype: str) -> float | None:
    """Write the converted model to ``tmp``; return the calibration time for int8 builds."""
    t0 = time.perf_counter()
    p = inputs.spec
    if spec.backend == "tflite":
        precision = TFLITE_PRECISION[spec.precision]
        tmp.write_bytes(convert.to_tflite(inputs.model, precision, inputs.calib if precision == "int8" else None, io_dtype))
        return time.perf_counter() - t0 if precision == "int8" else None
    import onnx

    proto = convert.to_onnx(inputs.model, p.size, p.channels)
    if spec.precision == "int8":
        with tempfile.TemporaryDirectory(prefix="signkit-onnx-") as d:
            f32 = Path(d) / "f32.onnx"
            onnx.save(proto, str(f32))
            t0 = time.perf_counter()
            convert.onnx_int8(f32, inputs.calib, tmp)
            return time.perf_counter() - t0
    onnx.save(proto, str(tmp))
    return None


def embed_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Put ``meta`` into the ONNX file's metadata_props, replacing the file atomically."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"signkit": json.dumps(meta)})
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def export_build(inputs: ExportInputs, name: str, out: Path | None = None, *, verify: bool = True,
                 gate: Gate = Gate(), io_dtype: str = "int8", max_reject: float = DEFAULT_MAX_REJECT) -> BuildResult:
    """Convert ``inputs.model`` into build ``name`` and write it (with its sidecar) only if it passes the gate.

    Returns:
        the result; ``path`` is None and ``passed`` False when the gate rejected the build.
    """
    if name not in BUILDS:
        raise ConfigError(f"unknown build {name!r}; choose one of {', '.join(BUILDS)}")
    spec = BUILDS[name]
    out = Path(out) if out else build_file(inputs.run_dir, spec)
    ensure_writable_dir(out.parent)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".part" + out.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    side = sidecar_of(tmp)
    t0 = time.perf_counter()
    try:
        calib_s = _convert(inputs, spec, tmp, io_dtype)
        backend = open_backend(tmp, spec.backend)
        meta = build_metadata(inputs, spec, _io(backend))
        analysis = analyse_tflite(tmp) if spec.backend == "tflite" else analyse_onnx(tmp)
        if spec.backend == "onnx":
            embed_onnx_metadata(tmp, meta)
        side.write_text(json.dumps(meta, indent=2))
        verification = None
        if verify:
            clf = Classifier.from_build(tmp)
            probs = predict_all(clf, inputs.verify_x)
            verification = verify_build(clf, spec, probs, inputs.verify_y, inputs.float_probs, gate)
            meta["verification"] = verification.to_dict()
            meta["threshold"] = pick_threshold(probs, inputs.verify_y, max_reject)
            meta["threshold_rule"] = f"keeps {100 * (1 - max_reject):g} % of correct validation predictions"
            side.write_text(json.dumps(meta, indent=2))
        size_kb = tmp.stat().st_size / 1024
        seconds = time.perf_counter() - t0
        if verification is not None and not verification.passed:
            return BuildResult(spec, None, size_kb, seconds, calib_s, verification, analysis)
        publish(tmp, out)
        publish(side, sidecar_of(out))
        return BuildResult(spec, out, size_kb, seconds, calib_s, verification, analysis)
    finally:
        for leftover in (tmp, side):
            if leftover.exists():
                leftover.unlink()
