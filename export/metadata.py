"""A build's metadata: made once the gate has passed, written into the build and beside it.

The sidecar (``model_int8.tflite.json``) and, for ONNX, the model's own ``metadata_props`` hold the
same record: class names, input, preprocessing, quantisation, the unknown threshold, the float
model it came from and the verification figures. The sidecar also holds the SHA-256 of the model
file it describes, so ``runtime.builds.read_metadata`` refuses a model beside a stale sidecar.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from export.report import restamp
from runtime.atomic import atomic_path
from runtime.builds import METADATA_FORMAT, BuildSpec, write_sidecar
from train.runs import Run


def background_fitted_on(bg: dict[str, Any]) -> list[dict[str, Any]]:
    """The frames that mined a run's background class, per folder (``runtime.annotations.frames_fitted`` reads it)."""
    if "fitted_on" in bg:
        return list(bg["fitted_on"])
    return [{"gt_sha256": bg.get("frames_gt_sha256"), "frames": bg.get("frames", [])}] if bg.get("frames") else []


def build_metadata(run: Run, spec: BuildSpec, *, keep_float: tuple[str, ...] = ()) -> dict[str, Any]:
    """A build's metadata from its run; the I/O types, threshold and verification figures join once the converted
    model has run through the runtime (``export.verify.check_candidate``)."""
    p = run.preprocess
    bg = run.meta.get("background") or {}
    return {
        "format": METADATA_FORMAT,
        "build": spec.name,
        "backend": spec.backend,
        "precision": spec.precision,
        "quantized": spec.quantized,
        "class_names": list(run.class_names),
        "num_classes": run.num_classes,
        "input": {"shape": [-1, p.size, p.size, p.channels], "layout": "NHWC", "colour": p.colour,
                  "camera_order": "frames are BGR (OpenCV); runtime converts to RGB"},
        "output": {"kind": "probabilities"},
        "preprocess": p.to_dict(),
        "threshold": 0.0,
        "threshold_rule": None,
        "background_class": bg.get("class_id"),
        "background_fitted_on": background_fitted_on(bg),
        "macs_per_roi": run.macs_per_roi,
        "float_model": {"path": str(run.model_file.resolve()), "sha256": run.model_sha256,
                        "arch": run.meta["arch"], "val_accuracy": run.meta.get("val_accuracy")},
        "verification": None,
        "kept_float": list(keep_float),  # nodes of an int8 build left in float on purpose (python -m export.debug)
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def embed_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Put ``meta`` into the ONNX file's metadata_props, replacing the file atomically."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"signkit": json.dumps({k: v for k, v in meta.items() if k != "model_sha256"})})
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def write_metadata(build: Path, meta: dict[str, Any]) -> None:
    """Rewrite an existing build's metadata (ONNX props first, then the sidecar with the new checksum)."""
    if build.suffix == ".onnx":
        embed_onnx_metadata(build, meta)
    write_sidecar(build, meta)
    restamp(build)
