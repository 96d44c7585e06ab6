"""Evaluate a trained model: accuracy, per-class precision/recall/F1, and where it errs, in pictures.

    python -m bench.evaluate --run runs/quickstart --split val test --skip-missing
    python -m bench.evaluate --run runs/quickstart --data data/GTSRB --split test --dump-errors errors/

Writes, for each split, OUT/eval-SPLIT/report.json, confusion.png, predictions.csv (one row per image: file, truth, prediction,
score, top 3), gallery_errors.png (the surest errors), gallery_random.png (right in green, wrong in
red), class_accuracy.png, confidence.png (top probability of right vs wrong predictions) and
mean_probabilities.png (each class's average probability vector: which classes it is confused with).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.mistakes import dump_errors, error_analysis
from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, DatasetFormatError, cli_errors
from runtime.metrics import classification_report
from runtime.preprocess import to_model_input
from train.data.formats import FORMATS
from train.plots import plot_confusion
from train.runs import Run


def evaluate(run: Run, data: Path | None = None, split: str = "val", fmt: str = "auto",
             out: Path | None = None, errors_dir: Path | None = None) -> dict[str, Any]:
    """Score ``run`` on ``split`` of ``data`` (default: its training data); write the report and pictures under ``out``
    (default: RUN/eval-SPLIT)."""
    ds = run.split(split, data, fmt, progress=True)
    # A test set has no "not a sign" images: a model with a background class has one class more.
    extra = 1 if run.background_class is not None and ds.num_classes == run.num_classes - 1 else 0
    if ds.num_classes + extra != run.num_classes:
        raise ConfigError(f"{data} has {ds.num_classes} classes but the model has {run.num_classes}; pass the dataset it was trained on")
    names = run.class_names
    out = ensure_writable_dir(out or run.path / f"eval-{split}")

    probs = run.load_model().predict(to_model_input(ds.images, run.preprocess), batch_size=256, verbose=0)
    report = classification_report(ds.labels, probs.argmax(1), len(names))
    result = {"model": str(run.path), "data": str(data or run.data_path), "split": split, "images": len(ds),
              **report.to_dict(names), "worst_classes": report.worst(5)}
    if run.background_class is not None:  # how well it reads the signs, comparable with a model without the class
        signs = ds.labels != run.background_class
        result["sign_images"] = int(signs.sum())
        result["sign_accuracy"] = float((probs[signs].argmax(1) == ds.labels[signs]).mean()) if signs.any() else None
    write_text_atomic(out / "report.json", json.dumps(result, indent=2))
    plot_confusion(report.confusion, names, out / "confusion.png",
                   f"{split}: accuracy {report.accuracy:.4f} on {len(ds)} images")
    result["confusion_png"] = str(out / "confusion.png")
    files = list(ds.files) if ds.files is not None else None
    result["pictures"] = {k: str(v) for k, v in error_analysis(probs, ds.labels, ds.images, files, names, out, split).items()}
    if errors_dir is not None:
        result["dumped_errors"] = len(dump_errors(errors_dir, ds.images, probs, ds.labels, files, names))
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [(f"{result['split']} accuracy {result['accuracy']:.4f} on {result['images']} images "
              f"(macro F1 {result['macro_f1']:.4f})")]
    if result.get("sign_accuracy") is not None:
        lines.append(f"signs only: accuracy {result['sign_accuracy']:.4f} on {result['sign_images']} sign images "
                     "(a sign read as 'not a sign' counts as wrong)")
    lines += [f"{'id':>3} {'class':<42} {'prec':>6} {'recall':>6} {'f1':>6} {'n':>5}"]
    for row in result["per_class"]:
        if row["support"]:
            lines.append(f"{row['class_id']:>3} {row['name'][:42]:<42} {row['precision']:6.3f} {row['recall']:6.3f} "
                         f"{row['f1']:6.3f} {row['support']:>5}")
    lines.append(f"confusion matrix: {result['confusion_png']}; per-image CSV and pictures beside it")
    if "dumped_errors" in result:
        lines.append(f"{result['dumped_errors']} wrong crops written")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.evaluate", description="Evaluate a trained run on a labelled split.\n\n"
        "Accuracy, per-class precision/recall/F1, and where it errs, in pictures.",
        formatter_class=HelpFormatter,
        epilog="examples:\n  python -m bench.evaluate --run runs/quickstart --split val test --skip-missing\n"
               "  python -m bench.evaluate --run runs/quickstart --data data/GTSRB --split test --dump-errors errors/",
    )
    p.add_argument("--run", type=Path, required=True, help="training run folder (model.keras + metadata.json)")
    p.add_argument("--data", type=Path, default=None, help="dataset folder, zip or pickle (default: the data the run was trained on)")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", *FORMATS), help="the dataset's layout")
    p.add_argument("--split", nargs="+", default=["val"], choices=("val", "dev-test", "test"),
                   help="val: the run's own held-out tracks; dev-test: the tracks it held out to report on "
                        "(--devtest-fraction); test: the dataset's test subset")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out a split the data does not have (said in one line) instead of stopping there")
    p.add_argument("--out", type=Path, default=None, help="folder for the eval-SPLIT report folders (default: the run)")
    p.add_argument("--dump-errors", type=Path, default=None, metavar="DIR",
                   help="write every wrong crop as <image>__<truth>__as__<prediction>.png")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    return p


@cli_errors("python -m bench.evaluate")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = Run.open(args.run)
    results = []
    for split in dict.fromkeys(args.split):
        out = (args.out or run.path) / f"eval-{split}"
        try:
            result = evaluate(run, args.data, split, args.fmt, out, args.dump_errors)
        except DatasetFormatError as err:
            if not args.skip_missing:
                raise
            print(f"{split}: not evaluated, the data has no such split ({str(err).splitlines()[0][:120]})", file=sys.stderr)
            continue
        results.append(result)
        if not args.json:
            print(format_table(result))
    if args.json:
        print(json.dumps(results[0] if len(args.split) == 1 and results else results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
