"""Write every build of the registry beside a trained model, each verified, plus one report.

    python -m export.all --model runs/edge-default
    python -m export.all --builds tflite-int8 onnx-int8 --verify-samples 1000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from export.cli import check_args, common_parser, run_builds
from runtime.builds import BUILDS
from runtime.cli import HelpFormatter
from runtime.errors import cli_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.all", parents=[common_parser()], formatter_class=HelpFormatter,
        description="Export all six builds (TFLite f32/f16/dynamic/int8, ONNX f32/int8) with verification and a report.",
        epilog="examples:\n  python -m export.all --model runs/edge-default\n"
               "  python -m export.all --builds tflite-int8 onnx-int8 --verify-samples 1000",
    )
    p.add_argument("--builds", nargs="+", choices=list(BUILDS), default=list(BUILDS), metavar="BUILD",
                   help=f"subset of builds ({', '.join(BUILDS)})")
    return p


@cli_errors("python -m export.all")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return run_builds(args, args.builds)


if __name__ == "__main__":
    sys.exit(main())
