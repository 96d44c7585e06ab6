"""Write every build of the registry beside a trained model, each verified, plus one report.

    python -m export.all --run runs/quickstart
    python -m export.all --builds tflite-int8 onnx-int8 --verify-samples 1000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from export.builder import export_builds
from export.cli import add_io_dtype, common_parser, parse_common, print_results
from runtime.builds import BUILDS
from runtime.cli import HelpFormatter
from runtime.errors import cli_errors
from train.runs import Run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.all", parents=[common_parser()], formatter_class=HelpFormatter,
        description="Export every build of the registry, each verified through the runtime, and a report.\n\n"
                    + "\n".join(f"  {b.name:<15} {b.description}" for b in BUILDS.values()),
        epilog="examples:\n  python -m export.all --run runs/quickstart\n"
               "  python -m export.all --builds tflite-int8 onnx-int8 --verify-samples 1000",
    )
    p.add_argument("--builds", nargs="+", choices=list(BUILDS), default=list(BUILDS), metavar="BUILD",
                   help="export only these builds (names above)")
    add_io_dtype(p)
    return p


@cli_errors("python -m export.all")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    calibration, options = parse_common(parser, args)
    return print_results(*export_builds(Run.resolve(args.run), args.builds, calibration=calibration,
                                        verify_samples=args.verify_samples, options=options, out=None))


if __name__ == "__main__":
    sys.exit(main())
