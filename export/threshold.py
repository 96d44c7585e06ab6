"""Calibrate a build's unknown / not-a-sign threshold, or set one by hand.

    python -m export.threshold --build runs/quickstart/model_int8.tflite
    python -m export.threshold --build runs/quickstart/model_int8.onnx --value 0.8

A prediction whose top probability is below the build's threshold is reported as "unknown".
Calibration runs the build (through the runtime) on its model's validation split and picks the
threshold that still accepts all but ``--max-reject`` of the correct predictions; int8 shifts
confidences, so each build gets its own. It also plots notebook A's study: the fractions of
right, wrong and not-sure predictions for every threshold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from export.metadata import write_metadata
from export.verify import DEFAULT_MAX_REJECT, pick_threshold, predict_all, threshold_curve
from runtime.atomic import folder_lock
from runtime.builds import read_metadata
from runtime.classifier import Classifier
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.preprocess import to_model_input
from train.plots import plot_threshold_curve
from train.runs import Run


def set_threshold(build: Path, value: float) -> None:
    """Write ``value`` into the build's sidecar (and, for ONNX, its metadata_props)."""
    meta = read_metadata(build)
    with folder_lock(build.parent, "export.threshold"):
        write_metadata(build, {**meta, "threshold": value, "threshold_rule": "set by hand"})


def calibrate(build: Path, run: Run | None = None, max_reject: float = DEFAULT_MAX_REJECT) -> tuple[float, Path]:
    """Run ``build`` on its run's validation split, set the threshold, plot the curve."""
    meta = read_metadata(build)
    run = run or Run.of_build(build, meta)
    val = run.split("val")
    probs = predict_all(Classifier.from_build(build), to_model_input(val.images, run.preprocess))
    value = pick_threshold(probs, val.labels, max_reject)
    with folder_lock(build.parent, "export.threshold"):
        write_metadata(build, {**meta, "threshold": value,
                               "threshold_rule": f"keeps {100 * (1 - max_reject):g} % of correct validation predictions"})
    png = plot_threshold_curve(threshold_curve(probs, val.labels), value, build.with_name(build.name + ".threshold.png"),
                               f"{meta['build']}: right / wrong / not sure vs threshold")
    return value, png


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.threshold", formatter_class=HelpFormatter,
        description="Calibrate (or set) a build's unknown threshold.",
        epilog="examples:\n  python -m export.threshold --build runs/quickstart/model_int8.tflite\n"
               "  python -m export.threshold --build runs/quickstart/model_int8.onnx --value 0.8",
    )
    p.add_argument("--build", type=Path, required=True, help="a .tflite/.onnx build with its sidecar")
    p.add_argument("--run", type=Path, default=None,
                   help="its training run (default: the run beside the build, else the one its metadata names)")
    p.add_argument("--max-reject", type=float, default=DEFAULT_MAX_REJECT,
                   help="fraction of correct validation predictions allowed to fall below the threshold")
    p.add_argument("--value", type=float, default=None, help="set this threshold instead of calibrating")
    return p


@cli_errors("python -m export.threshold")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.max_reject < 1:
        parser.error("--max-reject must be in [0, 1)")
    if args.value is not None and not 0 <= args.value <= 1:
        parser.error("--value must be in [0, 1]")
    if not args.build.is_file():
        raise ConfigError(f"--build {args.build} not found; export one with `python -m export.tflite --int8`")
    if args.value is not None:
        set_threshold(args.build, args.value)
        print(f"{args.build}: threshold set to {args.value}")
        return 0
    value, png = calibrate(args.build, Run.open(args.run) if args.run else None, args.max_reject)
    print(f"{args.build}: threshold {value:.3f} (rejects {100 * args.max_reject:g} % of correct validation predictions); curve: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
