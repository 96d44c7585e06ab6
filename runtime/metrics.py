"""Classification metrics in numpy: shared by bench.evaluate, the export gate and bench."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassReport:
    accuracy: float
    confusion: np.ndarray  # (C, C) counts, rows = truth
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    def worst(self, k: int = 5) -> list[int]:
        """Classes with the lowest recall among those present."""
        present = np.flatnonzero(self.support > 0)
        return [int(c) for c in present[np.argsort(self.recall[present], kind="stable")][:k]]

    def to_dict(self, class_names: Sequence[str]) -> dict:
        return {
            "accuracy": self.accuracy,
            "macro_f1": float(self.f1[self.support > 0].mean()) if self.support.any() else 0.0,
            "per_class": [
                {"class_id": i, "name": class_names[i], "precision": float(self.precision[i]), "recall": float(self.recall[i]),
                 "f1": float(self.f1[i]), "support": int(self.support[i])}
                for i in range(len(class_names))
            ],
        }


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> ClassReport:
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    cm = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    acc = float(tp.sum() / max(len(y_true), 1))
    return ClassReport(acc, cm, precision, recall, f1, support)
