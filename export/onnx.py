"""Compile a trained model into an ONNX build (tf2onnx, opset 17), verified before it is written.

    python -m export.onnx
    python -m export.onnx --int8 --run runs/quickstart

--int8 runs onnxruntime's quant_pre_process and static QDQ quantisation (per-channel int8),
calibrated on the same class-balanced training images as the TFLite int8 build.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from export.builder import export_builds
from export.cli import common_parser, parse_common, print_results
from runtime.cli import HelpFormatter
from runtime.errors import cli_errors
from train.runs import Run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.onnx", parents=[common_parser()], formatter_class=HelpFormatter,
        description="Export an ONNX build (float32 by default) and verify it through the runtime.",
        epilog="examples:\n  python -m export.onnx\n  python -m export.onnx --int8 --run runs/quickstart",
    )
    p.add_argument("--int8", action="store_true", help="static QDQ int8 quantisation (onnxruntime)")
    p.add_argument("--out", type=Path, default=None, help="output file (default: beside the model)")
    return p


@cli_errors("python -m export.onnx")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    calibration, options = parse_common(parser, args)
    return print_results(*export_builds(Run.resolve(args.run), ["onnx-int8" if args.int8 else "onnx-f32"], calibration=calibration,
                                        verify_samples=args.verify_samples, options=options, out=args.out))


if __name__ == "__main__":
    sys.exit(main())
