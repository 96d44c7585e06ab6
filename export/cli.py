"""Flags shared by every export command (one parent parser), and how their results are printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.builder import BuildResult, ExportOptions
from export.inputs import Calibration, ExportInputs
from export.verify import Gate, VerificationError, format_table


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--run", type=Path, default=None, help="training run folder (default: the most recent under runs/)")
    p.add_argument("--calib-data", type=Path, default=None,
                   help="dataset (or .npz of crops+labels) for calibration and verification (default: the training data)")
    p.add_argument("--calib-samples", type=int, default=500, help="class-balanced training images for int8 calibration")
    p.add_argument("--verify-samples", type=int, default=None, help="validation images for the gate (default: all)")
    p.add_argument("--no-verify", action="store_true", help="write builds without checking them against the float model")
    p.add_argument("--min-agreement", type=float, default=Gate.min_agreement, help="quantized builds: top-1 agreement %%")
    p.add_argument("--max-drop", type=float, default=Gate.max_drop, help="quantized builds: accuracy drop in pp")
    return p


def add_io_dtype(p: argparse.ArgumentParser) -> None:
    """--io-dtype, for the commands that make a TFLite int8 build (the ONNX recipes have float input and output)."""
    p.add_argument("--io-dtype", default="float32", choices=("float32", "int8", "uint8"),
                   help="tflite-int8 input/output: float32 converts inside the graph (fastest on a CPU); int8/uint8 "
                        "for integer-only accelerators")


def parse_common(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Calibration, ExportOptions]:
    """The shared flags as the typed arguments of ``export_builds`` (the one place they are read)."""
    if args.calib_samples < 1:
        parser.error("--calib-samples must be at least 1")
    if args.verify_samples is not None and args.verify_samples < 1:
        parser.error("--verify-samples must be at least 1")
    return (Calibration(args.calib_data, args.calib_samples),
            ExportOptions(verify=not args.no_verify, gate=Gate(args.min_agreement, args.max_drop),
                          io_dtype=vars(args).get("io_dtype", "float32")))


def print_results(inputs: ExportInputs, results: list[BuildResult]) -> int:
    """The figures of each build; raise (exit 1) if any failed its gate."""
    print(f"float model: validation accuracy {inputs.float_accuracy:.4f} on {len(inputs.verify_y)} images")
    for r in results:
        a = r.analysis
        where = r.path if r.path else "not written (failed the gate)"
        int_note = "" if r.spec.precision != "int8" else (
            (" integer-only" + (" (float in/out)" if a.get("float_io") else "")) if a["integer_only"]
            else f" float ops: {', '.join(a['non_integer_ops'])}")
        calib = f", convert+calibrate {r.convert_seconds:.1f}s" if r.convert_seconds else ""
        print(f"{r.spec.name:<15} {r.size_kb:8.1f} KB  ops: {', '.join(a['ops'])}{int_note}{calib} -> {where}")
    verified = [r.verification for r in results if r.verification]
    if verified:
        print(format_table(verified))
    print(f"report: {inputs.run.path / 'export_report.md'}")
    failed = [r.spec.name for r in results if not r.passed]
    if failed:
        raise VerificationError(f"{', '.join(failed)} failed verification and were not written; see the table above "
                                f"(retry with more --calib-samples, or loosen --min-agreement/--max-drop)")
    return 0
