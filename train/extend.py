"""New classes from a few photos (``python -m train --extend RUN --add DIR``), done so the old ones are not forgotten.

The added photos (class folders, ``train.data.folders``) join the run's own data: their classes
after the run's, photos of a class the run knows simply more of it. A share of each added class's
photos (whole tracks where the file names tell them) is held out to score it (``train.splits``). The model starts from
the run's weights with its output layer grown (the old classes' weights kept, the new ones fresh),
and fine-tunes on old and new data together at a low learning rate: rehearsal of the old classes
is what keeps them. Few photos of a class are repeated up to ``--min-per-class`` per epoch, each
time augmented anew and harder (scale, position, rotation, brightness, blur, perspective; never
flipped), since ten photos are easy to tell apart for the wrong reasons (notebook B's lesson).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.errors import ConfigError
from train.augment import AugmentConfig

STRONG = AugmentConfig(rotation_deg=15.0, zoom=0.25, shift=0.15, brightness=0.35, contrast=0.4, gamma=0.5, blur_p=0.4,
                       blur_sigma=(0.4, 1.4), perspective=0.12)


def grow_model(keras: Any, old: Any, num_classes: int) -> Any:
    """The old model with a ``logits`` layer of ``num_classes`` outputs: its first columns the old weights."""
    old_logits = old.get_layer("logits")
    w_old, b_old = old_logits.get_weights()
    if num_classes < w_old.shape[1]:
        raise ConfigError(f"--add gives {num_classes} classes, fewer than the run's {w_old.shape[1]}")
    logits = keras.layers.Dense(num_classes, name="logits")
    x = logits(old_logits.input)
    probs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    model = keras.Model(old.inputs, probs, name=old.name)
    w, b = logits.get_weights()
    w[:, : w_old.shape[1]] = w_old
    w[:, w_old.shape[1]:] *= 0.1  # small: the new classes start unsure
    b[: w_old.shape[1]] = b_old
    b[w_old.shape[1]:] = float(np.median(b_old))
    logits.set_weights([w, b])
    return model


def extension_report(old_model: Any, new_model: Any, x_val: np.ndarray, y_val: np.ndarray, old_classes: int,
                     class_names: tuple[str, ...]) -> dict[str, Any]:
    """What the old classes lost on their validation images, and what the new ones reach on their held-out photos."""
    old_rows = y_val < old_classes
    before = old_model.predict(x_val[old_rows], batch_size=256, verbose=0).argmax(1) if old_rows.any() else np.zeros(0)
    after = new_model.predict(x_val, batch_size=256, verbose=0).argmax(1)
    report: dict[str, Any] = {
        "old_classes": {"images": int(old_rows.sum()),
                        "accuracy_before": float((before == y_val[old_rows]).mean()) if old_rows.any() else None,
                        "accuracy_after": float((after[old_rows] == y_val[old_rows]).mean()) if old_rows.any() else None},
        "new_classes": {}}
    for c in range(old_classes, len(class_names)):
        sel = y_val == c
        report["new_classes"][class_names[c]] = {"held_out": int(sel.sum()),
                                                 "recall": float((after[sel] == c).mean()) if sel.any() else None}
    return report


def extension_lines(ext: dict[str, Any]) -> list[str]:
    """The extension's figures as lines: the old classes before and after, each new class's recall."""
    old = ext["old_classes"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f} %"

    lines = [(f"old classes: accuracy {pct(old['accuracy_before'])} before, {pct(old['accuracy_after'])} after, "
              f"on {old['images']} validation images")]
    for name, r in ext["new_classes"].items():
        recall = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        lines.append(f"new class {name}: recall {recall} on {r['held_out']} held-out photos")
    return lines
