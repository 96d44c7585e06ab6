"""Calibrate a build's unknown / not-a-sign threshold, or set one by hand.

    python -m export.threshold --build runs/edge-default/model_int8.tflite
    python -m export.threshold --build runs/edge-default/model_int8.onnx --value 0.8

A prediction whose top probability is below the build's threshold is reported as "unknown".
Calibration runs the build (through the runtime) on its model's validation split and picks the
threshold that still accepts all but ``--max-reject`` of the correct predictions; int8 shifts
confidences, so each build gets its own. It also plots notebook A's study: the fractions of
right, wrong and not-sure predictions for every threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.atomic import write_text_atomic
from runtime.builds import read_metadata, sidecar_of
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors

DEFAULT_MAX_REJECT = 0.01


def pick_threshold(probs: np.ndarray, labels: np.ndarray, max_reject: float = DEFAULT_MAX_REJECT) -> float:
    """The largest threshold that turns at most ``max_reject`` of the correct predictions into "unknown"."""
    top = probs.max(1)
    correct = top[probs.argmax(1) == labels]
    if correct.size == 0:
        return 0.0
    return float(np.floor(np.quantile(correct, max_reject, method="lower") * 1000) / 1000)


def threshold_curve(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fractions of right, wrong and not-sure (below threshold) predictions per threshold."""
    t = np.linspace(0, 1, 101) if thresholds is None else thresholds
    top, right = probs.max(1), probs.argmax(1) == labels
    sure = top[None, :] >= t[:, None]
    return {"threshold": t, "right": (sure & right).mean(1), "wrong": (sure & ~right).mean(1), "unsure": (~sure).mean(1)}


def plot_curve(curve: dict[str, np.ndarray], chosen: float, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, colour in (("right", "tab:green"), ("wrong", "tab:red"), ("unsure", "tab:gray")):
        ax.plot(curve["threshold"], curve[key], color=colour, label=key)
    ax.axvline(chosen, ls="--", color="k", label=f"threshold {chosen:.3f}")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("threshold on the top probability")
    ax.set_ylabel("fraction of validation images")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def set_threshold(build: Path, value: float) -> None:
    """Write ``value`` into the build's sidecar (and, for ONNX, its metadata_props)."""
    meta = read_metadata(build)
    meta["threshold"] = value
    if build.suffix == ".onnx":
        from export.pipeline import embed_onnx_metadata

        embed_onnx_metadata(build, {k: v for k, v in meta.items() if k != "verification"})
    write_text_atomic(sidecar_of(build), json.dumps(meta, indent=2))


def calibrate(build: Path, model_dir: Path | None = None, max_reject: float = DEFAULT_MAX_REJECT) -> tuple[float, Path]:
    """Run ``build`` on its model's validation split, set the threshold, plot the curve."""
    from export.inputs import load_inputs
    from export.verify import predict_all
    from runtime.classifier import Classifier

    meta = read_metadata(build)
    model_dir = model_dir or Path(meta["float_model"]["path"]).parent
    inputs = load_inputs(model_dir, calib_samples=1, need_calibration=False)
    probs = predict_all(Classifier.from_build(build), inputs.verify_x)
    value = pick_threshold(probs, inputs.verify_y, max_reject)
    set_threshold(build, value)
    png = plot_curve(threshold_curve(probs, inputs.verify_y), value, build.with_name(build.name + ".threshold.png"),
                     f"{meta['build']}: right / wrong / not sure vs threshold")
    return value, png


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.threshold", formatter_class=HelpFormatter,
        description="Calibrate (or set) a build's unknown threshold.",
        epilog="examples:\n  python -m export.threshold --build runs/edge-default/model_int8.tflite\n"
               "  python -m export.threshold --build runs/edge-default/model_int8.onnx --value 0.8",
    )
    p.add_argument("--build", type=Path, required=True, help="a .tflite/.onnx build with its sidecar")
    p.add_argument("--model", type=Path, default=None, help="its training run (default: from the build's metadata)")
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
    value, png = calibrate(args.build, args.model, args.max_reject)
    print(f"{args.build}: threshold {value:.3f} (rejects {100 * args.max_reject:g} % of correct validation predictions); curve: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
