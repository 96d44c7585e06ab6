"""The one registry of deployable builds, used by export, runtime and bench alike.

A build is a model file plus a JSON sidecar (``<file>.json``) holding everything the runtime
needs: labels, input shape/dtype, colour order, normalisation, quantisation, threshold and the
float model's accuracy. ONNX builds carry the same JSON in ``metadata_props["signkit"]``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.atomic import write_text_atomic
from runtime.backends import onnx_session
from runtime.errors import BuildError

METADATA_FORMAT = "signkit-build/1"


@dataclass(frozen=True)
class BuildSpec:
    name: str
    backend: str  # "tflite" | "onnx"
    suffix: str  # appended to the model stem: model_int8.tflite
    quantized: bool
    precision: str
    description: str
    max_prob_delta: float | None = None  # float builds: gate on |p_build - p_keras|; quantized: on agreement/accuracy


BUILDS: dict[str, BuildSpec] = {b.name: b for b in (
    BuildSpec("tflite-f32", "tflite", "_f32.tflite", False, "float32", "TFLite float32", 1e-4),
    BuildSpec("tflite-f16", "tflite", "_f16.tflite", False, "float16", "TFLite float16 weights", 1e-2),
    BuildSpec("tflite-dynamic", "tflite", "_dynamic.tflite", True, "dynamic-range", "TFLite int8 weights, float activations"),
    BuildSpec("tflite-int8", "tflite", "_int8.tflite", True, "int8",
              "TFLite full integer, per-channel; float in/out converted inside the graph (--io-dtype int8 for int8 in/out)"),
    BuildSpec("onnx-f32", "onnx", "_f32.onnx", False, "float32", "ONNX float32 (tf2onnx)", 1e-4),
    BuildSpec("onnx-int8", "onnx", "_int8.onnx", True, "int8", "ONNX static QDQ int8, per-channel (onnxruntime)"),
)}


def build_file(model_dir: Path, spec: BuildSpec, stem: str = "model") -> Path:
    return Path(model_dir) / f"{stem}{spec.suffix}"


def sidecar_of(build: Path) -> Path:
    return build.with_name(build.name + ".json")


def spec_for(path: Path, meta: dict[str, Any] | None = None) -> BuildSpec:
    """The registry entry of a build file: from its metadata, else from its file name."""
    if meta and meta.get("build") in BUILDS:
        return BUILDS[meta["build"]]
    for spec in BUILDS.values():
        if path.name.endswith(spec.suffix):
            return spec
    raise BuildError(f"{path}: cannot tell which build this is (expected a name ending in "
                     f"{', '.join(s.suffix for s in BUILDS.values())} or a metadata sidecar)")


REQUIRED_KEYS = ("build", "class_names", "preprocess")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(path: Path) -> dict[str, Any]:
    """A build's metadata from its sidecar, or for ONNX from the model's own metadata_props.

    A sidecar records the SHA-256 of its model: a model beside another build's sidecar (a re-export
    killed between the two renames, a file copied over) is refused, never run with the wrong labels,
    threshold or preprocessing.

    Raises:
        BuildError: no metadata, metadata that is not signkit's, or a sidecar of another model file.
    """
    if not Path(path).is_file():
        raise BuildError(f"build {path} not found; export one with `python -m export.tflite --int8`")
    side = sidecar_of(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BuildError(f"{side} is not valid JSON ({err}); re-export the build") from None
        where = str(side)
        if (isinstance(meta, dict) and meta.get("format") == METADATA_FORMAT
                and meta.get("model_sha256") != file_sha256(path)):
            raise BuildError(f"{path} is not the model its sidecar {side.name} describes (SHA-256 differs: replaced, "
                             f"or an export was interrupted); re-export the build")
    elif path.suffix == ".onnx":
        meta, where = _onnx_metadata(path), f"{path} (metadata_props)"
    else:
        raise BuildError(f"{path} has no metadata sidecar {side.name}; re-export it with `python -m export.all`")
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise BuildError(f"{where} is not signkit build metadata (format {found!r}); re-export the build")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BuildError(f"{where} lacks {', '.join(missing)}; re-export the build")
    return meta


def write_sidecar(model: Path, meta: dict[str, Any], dest: Path | None = None) -> Path:
    """The sidecar of ``model`` as it is on disk now (its SHA-256 included), written whole to ``dest`` (default: beside
    the model)."""
    return write_text_atomic(dest or sidecar_of(model), json.dumps({**meta, "model_sha256": file_sha256(model)}, indent=2))


def _onnx_metadata(path: Path) -> dict[str, Any]:
    props = onnx_session(path, threads=1).get_modelmeta().custom_metadata_map
    if "signkit" not in props:
        raise BuildError(f"{path} carries no signkit metadata and has no sidecar; re-export it with `python -m export.onnx`")
    try:
        meta: dict[str, Any] = json.loads(props["signkit"])
    except json.JSONDecodeError:
        raise BuildError(f"{path}: its signkit metadata_props are not valid JSON; re-export it") from None
    return meta
