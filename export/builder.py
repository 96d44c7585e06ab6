"""Compile builds: convert, verify through the runtime, and only then write model + metadata under their names.

    results = export_builds(Run.open("runs/quickstart"), ["tflite-int8", "onnx-int8"])
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.inputs import Calibration, ExportInputs, load_inputs
from export.metadata import build_metadata
from export.recipes import RECIPES, ConvertJob
from export.report import file_stamp, write_report
from export.verify import DEFAULT_MAX_REJECT, Gate, Verification, check_candidate
from runtime.atomic import locked_work_folder, publish
from runtime.builds import BUILDS, BuildSpec, build_file, sidecar_of, write_sidecar
from runtime.errors import ConfigError
from train.runs import Run


@dataclass(frozen=True)
class ExportOptions:
    """How builds are checked: the gate, whether to run it, the int8 I/O type, the unknown threshold's rule."""

    verify: bool = True
    gate: Gate = field(default_factory=Gate)
    io_dtype: str = "float32"  # tflite-int8's input/output; the ops between are integer either way
    max_reject: float = DEFAULT_MAX_REJECT  # share of correct validation predictions the threshold may reject
    keep_float: tuple[str, ...] = ()  # int8 builds: nodes left in float (python -m export.debug)


@dataclass
class BuildResult:
    spec: BuildSpec
    path: Path | None  # None when the gate rejected it
    size_kb: float
    seconds: float
    convert_seconds: float | None  # calibrated builds: conversion including calibration
    verification: Verification | None
    analysis: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.verification is None or self.verification.passed

    def report_entry(self) -> dict[str, Any]:
        return {"build": self.spec.name, "file": str(self.path) if self.path else None, "quantized": self.spec.quantized,
                "precision": self.spec.precision, "size_kb": self.size_kb, "export_seconds": round(self.seconds, 2),
                "calibration_seconds": None if self.convert_seconds is None else round(self.convert_seconds, 2),
                "analysis": self.analysis, "verification": self.verification.to_dict() if self.verification else None,
                "stamp": file_stamp(self.path)}


def export_build(inputs: ExportInputs, name: str, out: Path | None = None,
                 options: ExportOptions | None = None) -> BuildResult:
    """Convert ``inputs.model`` into build ``name``; write it with its metadata only if it passes the gate.

    Returns:
        the result; ``path`` is None and ``passed`` False when the gate rejected the build.
    """
    if name not in BUILDS:
        raise ConfigError(f"unknown build {name!r}; choose one of {', '.join(BUILDS)}")
    spec, recipe = BUILDS[name], RECIPES[name]
    options = options or ExportOptions()
    out = Path(out) if out else build_file(inputs.run.path, spec)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    t0 = time.perf_counter()
    try:
        recipe.convert(ConvertJob(inputs.model, inputs.spec, inputs.calib, options.io_dtype, options.keep_float), tmp)
        convert_s = time.perf_counter() - t0 if recipe.calibrated else None
        analysis = recipe.analyse(tmp)
        meta = build_metadata(inputs.run, spec, keep_float=options.keep_float)
        # The converted model runs through the runtime as a deployed build will; its figures complete the metadata.
        found = check_candidate(tmp, meta, spec, inputs.verify_x, inputs.verify_y, inputs.float_probs,
                                options.gate if options.verify else None, options.max_reject)
        verification = found.verification
        meta["input"].update(found.io["input"])
        meta["output"].update(found.io["output"])
        meta.update(threshold=found.threshold, threshold_rule=found.threshold_rule,
                    verification=verification.to_dict() if verification else None)
        if verification is not None and not verification.passed:
            return BuildResult(spec, None, tmp.stat().st_size / 1024, time.perf_counter() - t0, convert_s, verification,
                               analysis)
        if recipe.embed is not None:
            recipe.embed(tmp, meta)
        size_kb = tmp.stat().st_size / 1024
        write_sidecar(tmp, meta, sidecar_of(out))
        publish(tmp, out)
        return BuildResult(spec, out, size_kb, time.perf_counter() - t0, convert_s, verification, analysis)
    except OSError as err:  # the disk, not the build: name the file the user asked for
        raise OSError(err.errno, err.strerror, str(out)) from None
    finally:
        tmp.unlink(missing_ok=True)


def export_builds(run: Run, names: Sequence[str], *, calibration: Calibration | None = None,
                  verify_samples: int | None = None, options: ExportOptions | None = None,
                  out: Path | None = None) -> tuple[ExportInputs, list[BuildResult]]:
    """Export ``names`` from one loaded run and merge them into RUN/export_report.{json,md}.

    ``out`` (one build only) writes elsewhere than beside the run. The folder is locked while builds
    are written; temp files and temp space an interrupted export left there are removed.

    Raises:
        ConfigError: bad names, calibration data or output folder.
    """
    unknown = [n for n in names if n not in BUILDS]
    if unknown:
        raise ConfigError(f"unknown build(s) {', '.join(unknown)}; choose from {', '.join(BUILDS)}")
    if out is not None and len(names) != 1:
        raise ConfigError("--out names one file: export one build at a time with it")
    print(f"loading {run.path} and its calibration/verification data ...", file=sys.stderr)
    inputs = load_inputs(run, calibration or Calibration(), verify_samples=verify_samples,
                         need_calibration=any(RECIPES[n].calibrated for n in names))
    with locked_work_folder(Path(out).parent if out else run.path, "export"):
        results = []
        for name in names:
            print(f"exporting {name} ...", file=sys.stderr)
            results.append(export_build(inputs, name, out, options))
        write_report(run.path, [r.report_entry() for r in results])
    return inputs, results
