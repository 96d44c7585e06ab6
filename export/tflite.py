"""Compile a trained model into a TFLite build, verified against the float model before it is written.

    python -m export.tflite --int8
    python -m export.tflite --f16 --run runs/quickstart --out /tmp/signs_f16.tflite

Without a precision flag it writes the float32 build. The build lands beside the model
(model_int8.tflite + model_int8.tflite.json) unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from export.builder import export_builds
from export.cli import add_io_dtype, common_parser, parse_common, print_results
from runtime.cli import HelpFormatter
from runtime.errors import cli_errors
from train.runs import Run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.tflite", parents=[common_parser()], formatter_class=HelpFormatter,
        description="Export a TFLite build (float32 by default) and verify it through the runtime.",
        epilog="examples:\n  python -m export.tflite --int8\n"
               "  python -m export.tflite --f16 --run runs/quickstart --out /tmp/signs_f16.tflite",
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--int8", action="store_true", help="full integer: int8 weights and activations, calibrated")
    kind.add_argument("--f16", action="store_true", help="float16 weights")
    kind.add_argument("--dynamic", action="store_true", help="dynamic range: int8 weights, float activations")
    p.add_argument("--out", type=Path, default=None, help="output file (default: beside the model)")
    add_io_dtype(p)
    return p


def build_name(args: argparse.Namespace) -> str:
    return "tflite-int8" if args.int8 else "tflite-f16" if args.f16 else "tflite-dynamic" if args.dynamic else "tflite-f32"


@cli_errors("python -m export.tflite")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    calibration, options = parse_common(parser, args)
    return print_results(*export_builds(Run.resolve(args.run), [build_name(args)], calibration=calibration,
                                        verify_samples=args.verify_samples, options=options, out=args.out))


if __name__ == "__main__":
    sys.exit(main())
