"""Export report: size, op types, integer-only check, calibration time, verification, as JSON + Markdown."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import write_text_atomic
from runtime.backends import load_tflite_interpreter_class

INTEGER_DTYPES = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32, np.int64)}


def analyse_tflite(path: Path) -> dict[str, Any]:
    """Op types, and the ops that compute in float (none in a full-integer build).

    A QUANTIZE that takes the float model input, or a DEQUANTIZE that makes the float model output,
    is an edge, not float compute: with ``float_io`` the graph takes and gives float32 and converts at
    its edges (XNNPACK runs those conversions), while every op between them is integer."""
    # Without the default XNNPACK delegate, which would hide the graph behind one DELEGATE op.
    interpreter_class = load_tflite_interpreter_class()
    resolver = __import__(interpreter_class.__module__, fromlist=["OpResolverType"]).OpResolverType
    interpreter = interpreter_class(model_path=str(path),
                                    experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    model_in = {d["index"] for d in interpreter.get_input_details()}
    model_out = {d["index"] for d in interpreter.get_output_details()}
    ops: Counter[str] = Counter()
    non_integer: set[str] = set()
    for op in interpreter._get_ops_details():  # the public API exposes no op list
        ops[op["op_name"]] += 1
        ins, outs = [i for i in op["inputs"] if i >= 0], [i for i in op["outputs"] if i >= 0]
        edge = ((op["op_name"] == "QUANTIZE" and set(ins) <= model_in)
                or (op["op_name"] == "DEQUANTIZE" and set(outs) <= model_out))
        if not edge and any(dtypes[i] not in INTEGER_DTYPES for i in [*ins, *outs] if i in dtypes):
            non_integer.add(op["op_name"])
    float_io = any(dtypes[i] == np.float32 for i in model_in | model_out)
    return {"ops": dict(sorted(ops.items())), "integer_only": not non_integer, "non_integer_ops": sorted(non_integer),
            "float_io": float_io}


def analyse_onnx(path: Path) -> dict[str, Any]:
    """Op types; for QDQ models, the compute ops whose inputs are not all dequantised int8."""
    import onnx

    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    int_inits = {i.name for i in graph.initializer if i.data_type in (2, 3, 5, 6, 7)}  # uint8 int8 int16 int32 int64
    not_quantized = set()
    if "QuantizeLinear" in ops:
        for n in graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            if any(i and i not in dq_outputs and i not in int_inits for i in n.input):
                not_quantized.add(n.op_type)
    return {"ops": dict(sorted(ops.items())), "integer_only": "QuantizeLinear" in ops and not not_quantized,
            "non_integer_ops": sorted(not_quantized)}


def file_stamp(path: Path | None) -> dict[str, int] | None:
    """What a report entry records of the build file it describes (size and modification time), to notice a change."""
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_report(run_dir: Path) -> dict[str, dict[str, Any]]:
    """RUN/export_report.json by build, each entry marked ``stale`` when its build file is no longer the one it
    describes (replaced, or removed, since: an export interrupted between publishing a build and its report)."""
    json_path = Path(run_dir) / "export_report.json"
    if not json_path.is_file():
        return {}
    entries = {e["build"]: e for e in json.loads(json_path.read_text()).get("builds", [])}
    for e in entries.values():
        if e.get("file"):  # beside the run (wherever the run folder is now), else where --out put it
            here = Path(run_dir) / Path(e["file"]).name
            e["stale"] = file_stamp(here if here.is_file() else Path(e["file"])) != e.get("stamp")
    return entries


def write_report(run_dir: Path, entries: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Merge ``entries`` (one per build) into RUN/export_report.json and rewrite export_report.md."""
    json_path, md_path = run_dir / "export_report.json", run_dir / "export_report.md"
    merged = read_report(run_dir)
    merged.update({e["build"]: {**e, "stale": False} for e in entries})
    builds = sorted(merged.values(), key=lambda e: e["build"])
    markdown = to_markdown(run_dir, builds)
    write_text_atomic(json_path, json.dumps({"model": str(run_dir), "builds": builds}, indent=2))
    write_text_atomic(md_path, markdown)
    return json_path, md_path


def restamp(build: Path) -> None:
    """After a build's metadata was rewritten in place (``export.threshold``), its report entry describes it again."""
    json_path = build.parent / "export_report.json"
    if not json_path.is_file():
        return
    entries = json.loads(json_path.read_text()).get("builds", [])
    for e in entries:
        if e.get("file") and Path(e["file"]).name == build.name:
            e["stamp"] = file_stamp(build)
    write_text_atomic(json_path, json.dumps({"model": str(build.parent), "builds": entries}, indent=2))


def to_markdown(run_dir: Path, builds: list[dict[str, Any]]) -> str:
    lines = [f"# Export report: {run_dir}", "",
             "| build | size KB | accuracy | drop pp | agreement % | max abs dp | integer-only | calibration s | ops |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for e in builds:
        v = e.get("verification") or {}
        a = e["analysis"]
        int_only = ("-" if e.get("precision") != "int8" else ("yes, float in/out" if a.get("float_io") else "yes")
                    if a["integer_only"] else "no: " + ", ".join(a["non_integer_ops"]))
        lines.append(
            f"| {e['build']}{' (stale: the build changed since; re-export it)' if e.get('stale') else ''} | {e['size_kb']:.1f} | {v.get('accuracy', float('nan')):.4f} | {v.get('drop_pp', float('nan')):.2f} "
            f"| {v.get('agreement', float('nan')):.2f} | {v.get('max_prob_delta', float('nan')):.1e} | {int_only} "
            f"| {'-' if e.get('calibration_seconds') is None else format(e['calibration_seconds'], '.1f')} | {', '.join(f'{k}×{n}' for k, n in a['ops'].items())} |")
    lines += ["", "Accuracy is on the model's track-held-out validation split, through `runtime/` (not TensorFlow)."]
    return "\n".join(lines) + "\n"
