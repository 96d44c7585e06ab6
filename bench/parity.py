"""Accuracy parity: a quantized build against its float model, overall and class by class.

A build may agree with the float model on 99.5 % of images and still have lost half of one class
(int8 ranges set by common classes can crush a rare one). So besides top-1 agreement and the
accuracy drop, every class's recall drop is held to a floor, a stricter one for safety-critical
classes (stop, yield, no entry, speed limits). The floors live in ``bench/parity_floors.json``
(or the file ``$SIGNKIT_PARITY_FLOORS`` names). A failure's message is the per-class table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.metrics import classification_report

FLOORS_FILE = Path(__file__).with_name("parity_floors.json")


@dataclass(frozen=True)
class Floors:
    min_agreement_pct: float = 99.0
    max_accuracy_drop_pp: float = 0.5
    max_class_drop_pp: float = 3.0
    max_critical_class_drop_pp: float = 1.0
    free_images_per_class: int = 1  # a class may always lose this many images, whatever its percentage (near-tie flips)
    float_max_prob_delta: dict[str, float] = field(default_factory=lambda: {"float32": 1e-4, "float16": 1e-2})
    critical_classes: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path | None = None) -> Floors:
        path = Path(path or os.environ.get("SIGNKIT_PARITY_FLOORS") or FLOORS_FILE)
        data = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
        return cls(**{**data, "critical_classes": tuple(data.get("critical_classes", ()))})


@dataclass(frozen=True)
class ClassRow:
    class_id: int
    name: str
    n: int
    float_recall: float
    build_recall: float
    critical: bool

    @property
    def drop_pp(self) -> float:
        return 100.0 * (self.float_recall - self.build_recall)


@dataclass(frozen=True)
class Parity:
    build: str
    images: int
    float_accuracy: float
    accuracy: float
    agreement_pct: float
    rows: tuple[ClassRow, ...]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def drop_pp(self) -> float:
        return 100.0 * (self.float_accuracy - self.accuracy)

    def worst(self) -> ClassRow | None:
        return max(self.rows, key=lambda r: r.drop_pp, default=None)

    def table(self, limit: int = 12) -> str:
        """The classes that lost most (and every failing one): class, float recall, build recall, drop, n."""
        rows = sorted(self.rows, key=lambda r: -r.drop_pp)
        shown = [r for r in rows if r.drop_pp > 0][:limit]
        lines = [(f"{self.build}: accuracy {self.accuracy:.4f} (float {self.float_accuracy:.4f}, drop {self.drop_pp:+.2f} pp), "
                  f"top-1 agreement {self.agreement_pct:.2f} % on {self.images} images"),
                 f"{'class':<48} {'float':>6} {'build':>6} {'drop pp':>8} {'n':>5}"]
        for r in shown:
            name = f"{r.class_id} {r.name}{' *' if r.critical else ''}"
            lines.append(f"{name[:48]:<48} {r.float_recall:6.3f} {r.build_recall:6.3f} {r.drop_pp:8.2f} {r.n:>5}")
        if not shown:
            lines.append("(no class lost recall)")
        lines += [f"FAIL: {f}" for f in self.failures] or ["PASS"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"build": self.build, "images": self.images, "float_accuracy": self.float_accuracy, "accuracy": self.accuracy,
                "drop_pp": self.drop_pp, "agreement_pct": self.agreement_pct, "passed": self.passed,
                "failures": list(self.failures),
                "classes": [{"class_id": r.class_id, "name": r.name, "n": r.n, "float_recall": r.float_recall,
                             "build_recall": r.build_recall, "drop_pp": r.drop_pp, "critical": r.critical} for r in self.rows]}


def _allowed(floor_pp: float, n: int, free_images: int) -> float:
    """A class's allowed recall drop in pp: the floor, but never less than ``free_images`` of its ``n`` images.

    One flipped near-tie in a class of 30 is 3.3 pp, which a 3 pp floor would call a collapse; losing two
    of them (6.7 pp) is not forgiven.
    """
    return max(floor_pp, 100.0 * free_images / n)


def check_parity(build: str, float_pred: np.ndarray, build_pred: np.ndarray, labels: np.ndarray,
                 class_names: Sequence[str], floors: Floors) -> Parity:
    """Hold a build's top-1 predictions to the float model's on the same labelled images."""
    k = len(class_names)
    ref, got = classification_report(labels, float_pred, k), classification_report(labels, build_pred, k)
    agreement = 100.0 * float((float_pred == build_pred).mean()) if len(labels) else 100.0
    rows = tuple(ClassRow(c, class_names[c], int(ref.support[c]), float(ref.recall[c]), float(got.recall[c]),
                          class_names[c] in floors.critical_classes)
                 for c in range(k) if ref.support[c] > 0)
    failures = []
    if agreement < floors.min_agreement_pct:
        failures.append(f"top-1 agreement {agreement:.2f} % < {floors.min_agreement_pct} %")
    drop = 100.0 * (ref.accuracy - got.accuracy)
    if drop > floors.max_accuracy_drop_pp:
        failures.append(f"accuracy drop {drop:.2f} pp > {floors.max_accuracy_drop_pp} pp")
    for r in rows:
        floor = floors.max_critical_class_drop_pp if r.critical else floors.max_class_drop_pp
        allowed = _allowed(floor, r.n, floors.free_images_per_class)
        if r.drop_pp > allowed + 1e-9:
            failures.append(f"class {r.class_id} {r.name}{' (safety-critical)' if r.critical else ''} lost "
                            f"{r.drop_pp:.1f} pp of recall > {allowed:.1f} pp")
    return Parity(build, len(labels), ref.accuracy, got.accuracy, agreement, rows, tuple(failures))


def float_delta(build_probs: np.ndarray, float_probs: np.ndarray) -> float:
    """Largest |p_build - p_float| over every image and class (float builds against Keras)."""
    return float(np.abs(build_probs - float_probs).max()) if build_probs.size else 0.0


def delta_limit(precision: str, floors: Floors) -> float:
    return float(floors.float_max_prob_delta.get(precision, math.inf))
