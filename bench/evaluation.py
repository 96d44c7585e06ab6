"""Every build of a run on one labelled split, through the runtime: what the report and its plots are made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.parity import Floors, Parity, check_parity
from export.report import read_report
from export.verify import predict_all, threshold_curve
from runtime.builds import BUILDS, build_file
from runtime.classifier import Classifier
from runtime.errors import BackendUnavailableError, BuildError
from runtime.metrics import ClassReport, classification_report
from runtime.preprocess import to_model_input
from train.runs import Run


@dataclass
class BuildEval:
    name: str
    status: str  # "passed" | "exported, fails the gate" | "failed the gate (not written)" | "not exported" | "unavailable: ..."
    path: Path | None = None
    size_kb: float | None = None
    probs: np.ndarray | None = None
    report: ClassReport | None = None
    parity: Parity | None = None
    integer_only: bool | None = None
    threshold: float | None = None
    export_entry: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        return self.report.accuracy if self.report else None


@dataclass
class SplitEval:
    run: Run
    split: str
    images: np.ndarray  # uint8 RGB crops, for galleries
    labels: np.ndarray
    float_probs: np.ndarray
    float_report: ClassReport
    builds: dict[str, BuildEval]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.run.class_names


def evaluate_builds(run: Run, split: str = "val", data: Path | None = None, floors: Floors | None = None,
                    progress: bool = False) -> SplitEval:
    """The Keras model and every exported build on ``split``, with the parity check of each quantized build."""
    floors = floors or Floors.load()
    ds = run.split(split, data, progress=progress)
    x = to_model_input(ds.images, run.preprocess)
    float_probs = run.load_model().predict(x, batch_size=256, verbose=0)
    k = len(run.class_names)
    float_report = classification_report(ds.labels, float_probs.argmax(1), k)
    entries = read_report(run.path)
    builds: dict[str, BuildEval] = {}
    for name, spec in BUILDS.items():
        path = build_file(run.path, spec)
        entry = entries.get(name, {})
        if not path.is_file():
            failed = entry and entry.get("verification") and not entry["verification"].get("passed", True)
            builds[name] = BuildEval(name, "failed the gate (not written)" if failed else "not exported", export_entry=entry)
            continue
        try:
            clf = Classifier.from_build(path)
        except (BackendUnavailableError, BuildError) as err:
            builds[name] = BuildEval(name, f"unavailable: {err}", path, path.stat().st_size / 1024, export_entry=entry)
            continue
        probs = predict_all(clf, x)
        report = classification_report(ds.labels, probs.argmax(1), k)
        parity = check_parity(name, float_probs.argmax(1), probs.argmax(1), ds.labels, run.class_names, floors)
        verified = (clf.meta.get("verification") or {}).get("passed")
        gate_ok = parity.passed if spec.quantized else float(np.abs(probs - float_probs).max()) <= floors.float_max_prob_delta.get(
            spec.precision, np.inf)
        status = "passed" if verified and gate_ok else "exported, fails the gate"
        if entry.get("stale"):
            status += " (its export report is stale: re-export it)"
        analysis = entry.get("analysis") or {}
        builds[name] = BuildEval(name, status, path, path.stat().st_size / 1024, probs, report, parity,
                                 analysis.get("integer_only") if spec.precision == "int8" else None, clf.threshold, entry)
    return SplitEval(run, split, ds.images, ds.labels, float_probs, float_report, builds)


def curves(ev: SplitEval) -> dict[str, dict[str, np.ndarray]]:
    """Right / wrong / not-sure against the threshold, for the float model and every build evaluated."""
    out = {"float (Keras)": threshold_curve(ev.float_probs, ev.labels)}
    out.update({n: threshold_curve(b.probs, ev.labels) for n, b in ev.builds.items() if b.probs is not None})
    return out
