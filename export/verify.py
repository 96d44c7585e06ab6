"""The gate every build passes before it is written under its final name."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.builds import BuildSpec
from runtime.classifier import Classifier
from runtime.errors import SignkitError
from runtime.metrics import classification_report

DEFAULT_MAX_REJECT = 0.01


class VerificationError(SignkitError):
    """One or more builds failed the gate; the message is the table of figures."""


@dataclass(frozen=True)
class Gate:
    min_agreement: float = 99.5  # % of top-1 predictions equal to the float model's (quantized builds)
    max_drop: float = 0.3  # accuracy drop in percentage points (quantized builds)


@dataclass(frozen=True)
class Verification:
    build: str
    samples: int
    float_accuracy: float
    accuracy: float
    agreement: float  # percent
    max_prob_delta: float
    passed: bool
    reason: str
    worst: list[tuple[int, str, float]] = field(default_factory=list)  # (class, name, recall) of the build

    @property
    def drop_pp(self) -> float:
        return 100.0 * (self.float_accuracy - self.accuracy)

    def to_dict(self) -> dict:
        return {**asdict(self), "drop_pp": self.drop_pp}


def predict_all(clf: Classifier, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    return np.concatenate([clf.predict_proba(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def verify_build(clf: Classifier, spec: BuildSpec, probs: np.ndarray, y: np.ndarray, float_probs: np.ndarray,
                 gate: Gate = Gate()) -> Verification:
    """Hold the build's probabilities on the verification set (from ``predict_all``) to the float model's."""
    pred, ref = probs.argmax(1), float_probs.argmax(1)
    acc, float_acc = float((pred == y).mean()), float((ref == y).mean())
    agreement = 100.0 * float((pred == ref).mean())
    delta = float(np.abs(probs - float_probs).max())
    if spec.quantized:
        drop = 100.0 * (float_acc - acc)
        fails = [f"agreement {agreement:.2f}% < {gate.min_agreement}%"] if agreement < gate.min_agreement else []
        fails += [f"accuracy drop {drop:.2f} pp > {gate.max_drop} pp"] if drop > gate.max_drop else []
    else:
        fails = [f"max |dp| {delta:.2e} > {spec.max_prob_delta:.0e}"] if delta > (spec.max_prob_delta or 0) else []
    report = classification_report(y, pred, len(clf.class_names))
    worst = [(c, clf.class_names[c], float(report.recall[c])) for c in report.worst(5)]
    return Verification(spec.name, len(y), float_acc, acc, agreement, delta, not fails, "; ".join(fails) or "ok", worst)


def check_candidate(path: Path, meta: dict[str, Any], spec: BuildSpec, x: np.ndarray, y: np.ndarray,
                    float_probs: np.ndarray, gate: Gate | None, max_reject: float) -> Candidate:
    """Open a converted model through the runtime, as a deployed build will be, and hold it to the float model.

    ``gate`` None: not verified (the threshold stays 0). Returns the model's I/O types, the verification and the
    unknown threshold its validation predictions support."""
    clf = Classifier(path, meta, spec)
    io = io_details(clf.backend)
    if gate is None:
        return Candidate(io, None, 0.0, None)
    probs = predict_all(clf, x)
    return Candidate(io, verify_build(clf, spec, probs, y, float_probs, gate), pick_threshold(probs, y, max_reject),
                     f"keeps {100 * (1 - max_reject):g} % of correct validation predictions")


@dataclass(frozen=True)
class Candidate:
    """What running a converted model through the runtime told: its I/O, the verification, the threshold."""

    io: dict[str, Any]
    verification: Verification | None
    threshold: float
    threshold_rule: str | None


def _quant(q: tuple[float, int]) -> dict[str, float] | None:
    return {"scale": float(q[0]), "zero_point": int(q[1])} if q and q[0] else None


def io_details(backend: Any) -> dict[str, Any]:
    """Input/output dtype and quantisation of an opened runtime backend."""
    return {"input": {"dtype": backend.input_dtype.name, "quantization": _quant(backend.input_quant)},
            "output": {"dtype": backend.output_dtype.name, "quantization": _quant(backend.output_quant)}}


def format_table(results: list[Verification]) -> str:
    lines = [f"{'build':<15} {'accuracy':>8} {'drop pp':>8} {'agree %':>8} {'max|dp|':>9}  result"]
    for v in results:
        lines.append(f"{v.build:<15} {v.accuracy:8.4f} {v.drop_pp:8.2f} {v.agreement:8.2f} {v.max_prob_delta:9.2e}  "
                     f"{'PASS' if v.passed else 'FAIL: ' + v.reason}")
        if not v.passed:
            lines.append("    worst classes: " + ", ".join(f"{c} {n[:24]} ({r:.2f})" for c, n, r in v.worst))
    return "\n".join(lines)


def pick_threshold(probs: np.ndarray, labels: np.ndarray, max_reject: float = DEFAULT_MAX_REJECT) -> float:
    """The largest threshold that turns at most ``max_reject`` of the correct predictions into "unknown"."""
    top = probs.max(1)
    correct = top[probs.argmax(1) == labels]
    if correct.size == 0:
        return 0.0
    return float(np.floor(np.quantile(correct, max_reject, method="lower") * 1000) / 1000)


def threshold_curve(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fractions of right, wrong and not-sure (below threshold) predictions per threshold (notebook A's study)."""
    t = np.linspace(0, 1, 101) if thresholds is None else thresholds
    top, right = probs.max(1), probs.argmax(1) == labels
    sure = top[None, :] >= t[:, None]
    return {"threshold": t, "right": (sure & right).mean(1), "wrong": (sure & ~right).mean(1), "unsure": (~sure).mean(1)}
