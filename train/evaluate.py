"""Evaluate a trained model: accuracy, per-class precision/recall/F1 and a confusion-matrix PNG.

    python -m train.evaluate --model runs/edge-default --data ../shared/data/gtsrb --split val
    python -m train.evaluate --model runs/edge-default --data data/GTSRB --split test --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.metrics import classification_report
from runtime.preprocess import PreprocessSpec, to_model_input
from train.data import Split, load_dataset
from train.data.formats import FORMATS
from train.runs import load_keras_model
from train.training import config_from_metadata, split_train_val


def read_run(model_dir: Path) -> dict[str, Any]:
    """metadata.json of a training run, with a clear error when ``model_dir`` is not one."""
    meta = model_dir / "metadata.json"
    if not (model_dir / "model.keras").is_file() or not meta.is_file():
        raise ConfigError(f"{model_dir} is not a training run (needs model.keras and metadata.json); pass --model a folder written by `python -m train`")
    return json.loads(meta.read_text())


def evaluation_split(meta: dict[str, Any], data: Path, split: str, fmt: str = "auto") -> Split:
    """The images a run is scored on: its own validation split, rebuilt, or the test subset."""
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    if split == "test":
        return load_dataset(data, fmt, subset="test", size=spec.size, margin=spec.margin)
    cfg = config_from_metadata(meta, data, same_data=fmt == "auto")
    if fmt != "auto":
        cfg = replace(cfg, fmt=fmt)
    train_set, val_set, _ = split_train_val(data, cfg, spec.size)
    if train_set.fingerprint != meta["dataset"]["fingerprint"]:
        print(f"warning: {data} is not the data this model was trained on; its 'val' split may overlap training",
              file=sys.stderr)
    return val_set


def evaluate(model_dir: Path, data: Path, split: str = "val", fmt: str = "auto", out: Path | None = None) -> dict[str, Any]:
    """Score ``model_dir`` on ``split`` of ``data``; write report.json and confusion.png under ``out``."""
    meta = read_run(model_dir)
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    ds = evaluation_split(meta, data, split, fmt)
    # A test set has no "not a sign" images: a model with a background class has one class more.
    extra = 1 if meta.get("background") and ds.num_classes == meta["num_classes"] - 1 else 0
    if ds.num_classes + extra != meta["num_classes"]:
        raise ConfigError(f"{data} has {ds.num_classes} classes but the model has {meta['num_classes']}; pass the dataset it was trained on")
    names = tuple(meta["class_names"])
    out = ensure_writable_dir(out or model_dir / f"eval-{split}")

    model = load_keras_model(model_dir / "model.keras")
    probs = model.predict(to_model_input(ds.images, spec), batch_size=256, verbose=0)
    report = classification_report(ds.labels, probs.argmax(1), len(names))
    result = {"model": str(model_dir), "data": str(data), "split": split, "images": len(ds),
              **report.to_dict(names), "worst_classes": report.worst(5)}
    write_text_atomic(out / "report.json", json.dumps(result, indent=2))
    from train.plots import plot_confusion

    plot_confusion(report.confusion, names, out / "confusion.png",
                   f"{split}: accuracy {report.accuracy:.4f} on {len(ds)} images")
    result["confusion_png"] = str(out / "confusion.png")
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{result['split']} accuracy {result['accuracy']:.4f} on {result['images']} images "
             f"(macro F1 {result['macro_f1']:.4f})", f"{'id':>3} {'class':<42} {'prec':>6} {'recall':>6} {'f1':>6} {'n':>5}"]
    for row in result["per_class"]:
        if row["support"]:
            lines.append(f"{row['class_id']:>3} {row['name'][:42]:<42} {row['precision']:6.3f} {row['recall']:6.3f} "
                         f"{row['f1']:6.3f} {row['support']:>5}")
    lines.append(f"confusion matrix: {result['confusion_png']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate", description="Score a trained model on its validation split or a test set.",
        formatter_class=HelpFormatter,
        epilog="examples:\n  python -m train.evaluate --model runs/edge-default --data ../shared/data/gtsrb --split val\n"
               "  python -m train.evaluate --model runs/edge-default --data data/GTSRB --split test --json",
    )
    p.add_argument("--model", type=Path, required=True, help="training run folder (model.keras + metadata.json)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder, zip or pickle")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", *FORMATS))
    p.add_argument("--split", default="val", choices=("val", "test"),
                   help="val: the run's own held-out tracks; test: the dataset's test subset")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: MODEL/eval-SPLIT)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


@cli_errors("python -m train.evaluate")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = evaluate(args.model, args.data, args.split, args.fmt, args.out)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
