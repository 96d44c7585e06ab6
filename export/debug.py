"""Where int8 hurts: float against quantized, layer by layer; then leave the worst layers in float and see what it buys.

    python -m export.debug --run runs/quickstart --build runs/quickstart/model_int8.tflite
    python -m export.debug --run runs/quickstart --build runs/quickstart/model_int8.onnx --keep-worst 2

The export commands' flags apply (--calib-samples: the images measured on and calibrated with;
--min-agreement / --max-drop: the gate the re-export passes).

TFLite builds are measured with TFLite's own QuantizationDebugger (per layer: mean error, max
absolute error, RMSE, RMSE divided by the layer's scale), ONNX builds with onnxruntime's
``quantization.qdq_loss_debug`` (per tensor: the signal-to-quantization-noise ratio of the int8
activation against the float one), both on a calibration-style sample of training images. The
ranking goes to OUT/layers.csv, layers.md and layers.png.

``--keep-float NODE ...`` (names from the ranking) or ``--keep-worst K`` re-exports the int8 build
with those nodes left in float (TFLite ``denylisted_nodes``; onnxruntime ``nodes_to_exclude``)
through the normal export gate, to OUT/, and reports what it bought in agreement and accuracy and
what it cost in size and latency.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from export import convert
from export.builder import ExportOptions, export_build
from export.cli import common_parser, parse_common
from export.inputs import Calibration, load_inputs
from runtime.atomic import atomic_path, ensure_writable_dir, write_text_atomic
from runtime.builds import read_metadata, spec_for
from runtime.classifier import ms_per_roi
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from train.plots import save_figure
from train.runs import Run


@dataclass(frozen=True)
class LayerError:
    name: str  # the node name --keep-float takes
    op: str
    error: float  # the ranking key: larger is worse (RMSE/scale for TFLite, 1/SQNR in dB terms for ONNX)
    details: dict[str, float]


def tflite_layer_errors(run: Run, calib: np.ndarray) -> list[LayerError]:
    """TFLite's QuantizationDebugger over the run's model: per-layer error of the int8 activations."""

    with tempfile.TemporaryDirectory(prefix="signkit-debug-") as tmp:
        saved = convert.saved_model(run.load_model(), Path(tmp) / "sm")
        debugger = convert.quantization_debugger(convert.tflite_converter(saved, "int8", calib, allow_float_ops=True), calib)
        debugger.run()
        dump = Path(tmp) / "layers.csv"
        with open(dump, "w") as f:
            debugger.layer_statistics_dump(f)
        with open(dump) as f:
            rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        scale = float(r.get("scale") or 0) or 1.0
        rmse = float(np.sqrt(float(r["mean_squared_error"])))
        out.append(LayerError(r["tensor_name"], r["op_name"], rmse / scale,
                              {"mean_error": float(r["mean_error"]), "max_abs_error": float(r["max_abs_error"]), "rmse": rmse,
                               "scale": scale, "rmse_over_scale": rmse / scale}))
    return sorted(out, key=lambda e: -e.error)


def onnx_layer_errors(run: Run, calib: np.ndarray) -> list[LayerError]:
    """onnxruntime's qdq_loss_debug: SQNR of each int8 activation against the float model's, on the same inputs."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    spec = run.preprocess
    with tempfile.TemporaryDirectory(prefix="signkit-debug-") as tmp:
        d = Path(tmp)
        onnx.save(convert.to_onnx(run.load_model(), spec.size, spec.channels), str(d / "f32.onnx"))
        prepped = convert.onnx_prepped(d / "f32.onnx", d / "prepped.onnx")  # the graph quantize_static sees
        convert.onnx_int8(d / "f32.onnx", calib, d / "qdq.onnx")
        name = onnx.load(str(prepped)).graph.input[0].name
        modify_model_output_intermediate_tensors(str(prepped), str(d / "float_aug.onnx"))
        modify_model_output_intermediate_tensors(str(d / "qdq.onnx"), str(d / "qdq_aug.onnx"))
        float_acts = collect_activations(str(d / "float_aug.onnx"), convert.calibration_reader(name, calib))
        qdq_acts = collect_activations(str(d / "qdq_aug.onnx"), convert.calibration_reader(name, calib))
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
        producers = {o: (n.name, n.op_type) for n in onnx.load(str(prepped)).graph.node for o in n.output}
    out = []
    for tensor, e in errors.items():
        node, op = producers.get(tensor, (tensor, "?"))
        sqnr = float(e.get("xmodel_err", np.inf))  # dB: int8 activation against the float model's, inputs quantized upstream
        out.append(LayerError(node, op, -sqnr, {"sqnr_db": sqnr, "qdq_sqnr_db": float(e.get("qdq_err", np.inf))}))
    return sorted(out, key=lambda e: -e.error)


def short_name(node: str) -> str:
    """A fused TFLite node's layer, for a plot label: "m/re_lu_1/Relu;m/conv2d_1/convolution;..." -> "conv2d_1"
    (the name the converter traced, which may carry a suffix the Keras layer has not)."""
    layers = [seg.split("/")[1] for seg in node.split(";") if seg.count("/") >= 2]
    main = [name for name in layers if name.startswith(("conv", "depthwise", "dense", "logits"))]
    return (main or layers or [node[-38:]])[0]


def write_ranking(errors: list[LayerError], out: Path, backend: str) -> dict[str, Path]:
    keys = sorted({k for e in errors for k in e.details})
    with atomic_path(out / "layers.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "node", "op", *keys])
        for i, e in enumerate(errors, start=1):
            w.writerow([i, e.name, e.op, *[f"{e.details.get(k, float('nan')):.6g}" for k in keys]])
    measure = "RMSE / scale (TFLite QuantizationDebugger)" if backend == "tflite" else "SQNR dB, lower is worse (onnxruntime qdq_loss_debug)"
    lines = [f"# Where int8 hurts: {measure}", "", "| rank | node | op | " + " | ".join(keys) + " |", "|" + "---|" * (3 + len(keys))]
    lines += [f"| {i} | `{e.name}` | {e.op} | " + " | ".join(f"{e.details.get(k, float('nan')):.4g}" for k in keys) + " |"
              for i, e in enumerate(errors[:25], start=1)]
    write_text_atomic(out / "layers.md", "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = errors[:20][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(top) + 1.4))
    values = [e.details["rmse_over_scale"] if backend == "tflite" else e.details["sqnr_db"] for e in top]
    ax.barh([f"{e.op} {short_name(e.name)}" for e in top], values, color="tab:red" if backend == "tflite" else "tab:orange")
    ax.set_xlabel(measure)
    ax.set_title("layers ranked by int8 error (worst at the top)" if backend == "tflite" else "tensors ranked by SQNR (worst at the top)")
    ax.tick_params(axis="y", labelsize=7)
    png = save_figure(fig, out / "layers.png")
    return {"csv": out / "layers.csv", "md": out / "layers.md", "png": png}


def resolve_nodes(given: Sequence[str], errors: list[LayerError], ranking: Path) -> list[str]:
    """Each ``--keep-float`` value as a node name: the name itself, or the one name it is a part of (conv2d_1/)."""
    names = [e.name for e in errors]
    out = []
    for g in given:
        hits = [n for n in names if n == g] or [n for n in names if g in n]
        if len(hits) != 1:
            what = "is not part of any node" if not hits else f"is part of {len(hits)} nodes"
            raise ConfigError(f"--keep-float {g} {what} of the ranking; copy a name from {ranking}")
        out.append(hits[0])
    return out


def keep_float(run: Run, build: Path, nodes: tuple[str, ...], out: Path, calibration: Calibration,
               options: ExportOptions, verify_samples: int | None = None) -> dict[str, Any]:
    """Re-export ``build`` with ``nodes`` in float through the export gate; compare it with ``build``."""
    spec = spec_for(build, read_metadata(build))
    inputs = load_inputs(run, calibration, verify_samples=verify_samples)
    new = export_build(inputs, spec.name, out / build.name, replace(options, keep_float=nodes))
    old = read_metadata(build).get("verification") or {}
    x = inputs.verify_x[:1]
    result: dict[str, Any] = {"kept_float": list(nodes), "written": str(new.path) if new.path else None,
                              "passed_gate": new.passed, "before": {"size_kb": build.stat().st_size / 1024,
                                                                    "accuracy": old.get("accuracy"), "agreement": old.get("agreement"),
                                                                    "ms_per_roi": ms_per_roi(build, x)},
                              "after": {"size_kb": new.size_kb}}
    if new.verification is not None:
        result["after"].update(accuracy=new.verification.accuracy, agreement=new.verification.agreement)
    if new.path is not None:
        result["after"]["ms_per_roi"] = ms_per_roi(new.path, x)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.debug", parents=[common_parser()], formatter_class=HelpFormatter,
        description="Rank the layers of an int8 build by quantization error; re-export with the worst left in float.",
        epilog="examples:\n  python -m export.debug --run runs/quickstart --build runs/quickstart/model_int8.tflite\n"
               "  python -m export.debug --run runs/quickstart --build runs/quickstart/model_int8.onnx --keep-worst 2",
    )
    p.add_argument("--build", type=Path, required=True, help="an int8 build (.tflite or .onnx) of --run")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: MODEL/debug-BUILD)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep-float", nargs="+", default=None, metavar="NODE", help="nodes (from the ranking) to leave in float")
    keep.add_argument("--keep-worst", type=int, default=None, metavar="K", help="leave the K worst-ranked nodes in float")
    return p


@cli_errors("python -m export.debug")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    calibration, options = parse_common(parser, args)
    if args.keep_worst is not None and args.keep_worst < 1:
        parser.error("--keep-worst must be at least 1")
    run = Run.resolve(args.run)
    if not args.build.is_file():
        raise ConfigError(f"--build {args.build} not found; export one with python -m export.all --run {run.path}")
    spec = spec_for(args.build, read_metadata(args.build))
    if spec.precision != "int8":
        raise ConfigError(f"--build {args.build} is {spec.name}: export.debug compares int8 builds with their float model")
    out = ensure_writable_dir(args.out or run.path / f"debug-{spec.name}", "--out")
    calib = load_inputs(run, calibration, verify_samples=args.verify_samples).calib
    print(f"measuring {spec.name} layer by layer on {len(calib)} training images ...", file=sys.stderr)
    errors = tflite_layer_errors(run, calib) if spec.backend == "tflite" else onnx_layer_errors(run, calib)
    files = write_ranking(errors, out, spec.backend)
    print(files["md"].read_text())
    nodes = tuple(resolve_nodes(args.keep_float, errors, files["csv"]) if args.keep_float
                  else [e.name for e in errors[: args.keep_worst or 0]])
    if nodes:
        r = keep_float(run, args.build, nodes, out, calibration, options, args.verify_samples)
        write_text_atomic(out / "keep_float.json", json.dumps(r, indent=2))
        b, a = r["before"], r["after"]
        print(f"kept in float: {', '.join(nodes)}")
        for when, m in (("before:", b), ("after: ", a)):
            acc, agree = m.get("accuracy"), m.get("agreement")
            print(f"{when} {m['size_kb']:.1f} KB, accuracy {'-' if acc is None else f'{100 * acc:.2f} %'}, "
                  f"agreement {'-' if agree is None else f'{agree:.2f} %'}, {m.get('ms_per_roi', float('nan')):.3f} ms/ROI"
                  + (f" -> {r['written'] or 'not written (failed the gate)'}" if m is a else ""))
    print(f"ranking: {files['md']} ({files['csv'].name}, {files['png'].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
