"""One report of every build of a run: accuracy, size and latency side by side, with the pictures that explain them.

    python -m bench.report --run runs/quickstart --data data/GTSRB
    python -m bench.report --run runs/quickstart --frames data/GTSDB/gtsdb --compare runs/quickstart/report/report.json

Writes OUT/report.md, OUT/report.json and OUT/report.html (one self-contained page, pictures
embedded) with the PNGs beside them. Accuracy is every build run through the runtime on the
run's held-out split (``--split``); latency comes from the benchmark suite itself (``pytest
bench/test_latency.py --benchmark-only``, run here in a subprocess, or ``--latency-json`` from an
earlier run), so the report times the same function users call; ``--frames`` adds the frame
pipeline on GTSDB-layout frames (``bench.gtsdb``).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import report_plots as plots
from bench.evaluation import SplitEval, curves, evaluate_builds
from bench.gtsdb import load_frames, score_build
from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.builds import BUILDS
from runtime.bundle import BUNDLE_FILE, Bundle
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.machine import describe_cpu
from runtime.proposals import Ranker, default_ranker
from train.plots import gallery
from train.runs import Run

REPO = Path(__file__).resolve().parents[1]
ALL = os.cpu_count() or 1


def run_latency_suite(run: Path, out_json: Path) -> Path:
    """``pytest bench/test_latency.py --benchmark-only`` on the run's builds, its JSON kept (with raw timings)."""
    cmd = [sys.executable, "-m", "pytest", str(REPO / "bench" / "test_latency.py"), "--benchmark-only", "-q",
           "-p", "no:cacheprovider", f"--run={run}", f"--benchmark-json={out_json}", "--benchmark-warmup=on"]
    print("timing every build: " + " ".join(cmd[2:]), file=sys.stderr)
    proc = subprocess.run(cmd, cwd=REPO, check=False, capture_output=True, text=True)
    if proc.returncode != 0 or not out_json.is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise ConfigError(f"the latency suite failed ({' | '.join(tail)}); run it alone: pytest bench/ --benchmark-only "
                          f"--run {run}")
    return out_json


def read_latency_json(bench_json: Path, what: str = "--latency-json") -> dict[str, Any]:
    """A pytest-benchmark JSON, read once for ``latency_table`` and ``timed_on``; ``what`` names it in errors.

    Raises:
        ConfigError: the file is missing or is not pytest-benchmark JSON (one line naming it)."""
    try:
        data = json.loads(Path(bench_json).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{what} {bench_json} is not pytest-benchmark JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ConfigError(f"{what} {bench_json} is not pytest-benchmark JSON (no list of benchmarks)")
    return data


def latency_table(data: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]], dict[str, float]]:
    """Per build: p50/p95 ms per ROI at 1 and all threads, ROIs/s batched, first invoke, RSS; raw 1-thread timings;
    and the frame stages' medians (``data``: ``read_latency_json``'s)."""
    per: dict[str, dict[str, Any]] = {}
    raw: dict[str, list[float]] = {}
    stages: dict[str, float] = {}
    for b in data["benchmarks"]:
        params, info, stats = b.get("params") or {}, b.get("extra_info") or {}, b["stats"]
        name = b["name"]
        if name.startswith("test_invoke["):
            build = name[len("test_invoke["):].rsplit("-t", 1)[0]
            threads, batch = int(info.get("threads", params.get("threads", 1))), int(info.get("batch", params.get("batch", 1)))
            row = per.setdefault(build, {})
            ms = [1000 * t for t in stats["data"]]
            key = "t1" if threads == 1 else "tall"
            if batch == 1:
                row[f"p50_ms_{key}"] = float(np.median(ms))
                row[f"p95_ms_{key}"] = float(np.percentile(ms, 95))
                if threads == 1:
                    raw[build] = stats["data"]
                    row["first_invoke_ms"] = info.get("first_invoke_ms")
                    row["peak_rss_mb"] = info.get("peak_rss_mb")
            else:
                row[f"rois_per_s_{key}"] = batch * 1000.0 / float(np.median(ms))
        elif name.startswith(("test_proposals", "test_crop_and_preprocess")):
            stages[name.split("[")[0].removeprefix("test_")] = 1000 * float(stats["median"])
    return per, raw, stages


def timed_on(data: dict[str, Any]) -> str | None:
    """The CPU a latency JSON (``read_latency_json``'s) was timed on: the suite's own description, else
    pytest-benchmark's CPU brand."""
    for b in data.get("benchmarks", []):
        cpu = ((b.get("extra_info") or {}).get("versions") or {}).get("cpu")
        if cpu:
            return str(cpu)
    cpu_info = (data.get("machine_info") or {}).get("cpu") or {}
    brand = cpu_info.get("brand_raw")
    return f"{brand}, {cpu_info['count']} cores" if brand and cpu_info.get("count") else brand


def build_rows(ev: SplitEval, latency: dict[str, dict[str, Any]], frames: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    names = ev.class_names
    for name, b in ev.builds.items():
        timed = b.path is not None  # a benchmark JSON may hold builds this run does not have
        row: dict[str, Any] = {"build": name, "status": b.status, "size_kb": b.size_kb, "integer_only": b.integer_only,
                               "threshold": b.threshold, **(latency.get(name, {}) if timed else {}), **frames.get(name, {})}
        if b.report is not None and b.parity is not None:
            worst = b.parity.worst()
            row.update(accuracy=b.report.accuracy, drop_pp=100 * (ev.float_report.accuracy - b.report.accuracy),
                       agreement_pct=b.parity.agreement_pct,
                       macro_f1=float(b.report.f1[b.report.support > 0].mean()),
                       worst_class=f"{worst.class_id} {names[worst.class_id]}" if worst and worst.drop_pp > 0 else "-",
                       worst_drop_pp=worst.drop_pp if worst and worst.drop_pp > 0 else 0.0,
                       parity_failures=list(b.parity.failures))
        rows.append(row)
    return rows


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


COLUMNS = [("build", "build", ""), ("status", "status", ""), ("size_kb", "size KB", ".1f"), ("accuracy", "accuracy", ".4f"),
           ("drop_pp", "drop pp", "+.2f"), ("agreement_pct", "agree %", ".2f"), ("macro_f1", "macro-F1", ".4f"),
           ("worst_class", "worst class", ""), ("worst_drop_pp", "its drop pp", ".1f"), ("p50_ms_t1", "p50 ms t1", ".3f"),
           ("p95_ms_t1", "p95 ms t1", ".3f"), ("p50_ms_tall", f"p50 ms t{ALL}", ".3f"), ("p95_ms_tall", f"p95 ms t{ALL}", ".3f"),
           ("rois_per_s_t1", "ROIs/s b8 t1", ".0f"), ("first_invoke_ms", "first ms", ".2f"), ("peak_rss_mb", "RSS MB", ".1f"),
           ("integer_only", "int-only", "")]
FRAME_COLUMNS = [("proposal_recall", "prop. recall", ".3f"), ("precision", "P", ".3f"), ("recall", "R", ".3f"),
                 ("f1", "F1", ".3f"), ("crops", "crops/frame", ".1f"), ("gmacs", "G MACs/frame", ".2f"),
                 ("fps", "frames/s", ".1f")]


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(c[1] for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), spec) for k, _, spec in columns) + " |")
    return "\n".join(lines)


def compare_rows(rows: list[dict[str, Any]], other: dict[str, Any]) -> list[dict[str, Any]]:
    """This report's rows beside another's, with deltas of the figures both have."""
    theirs = {r["build"]: r for r in other.get("builds", [])}
    out = []
    for r in rows:
        o = theirs.get(r["build"], {})
        row = {"build": r["build"]}
        for key in ("accuracy", "size_kb", "p50_ms_t1", "macro_f1", "f1"):
            a, b = r.get(key), o.get(key)
            row[f"{key}"], row[f"{key}_other"] = a, b
            row[f"{key}_delta"] = a - b if isinstance(a, float) and isinstance(b, float) else None
        out.append(row)
    return out


COMPARE_COLUMNS = [("build", "build", "")] + [
    (f"{k}{suffix}", f"{label}{head}", spec) for k, label, spec in
    (("accuracy", "accuracy", ".4f"), ("size_kb", "size KB", ".1f"), ("p50_ms_t1", "p50 ms t1", ".3f"), ("macro_f1", "macro-F1", ".4f"),
     ("f1", "frame F1", ".3f"))
    for suffix, head in (("", " (this)"), ("_other", " (other)"), ("_delta", " Δ"))]


def galleries(ev: SplitEval, out: Path, reference: str = "tflite-int8") -> list[Path]:
    """Crops where the float model and the int8 build disagree, and the build's surest errors."""
    b = ev.builds.get(reference)
    if b is None or b.probs is None:
        return []
    names = ev.class_names
    fp, bp = ev.float_probs.argmax(1), b.probs.argmax(1)
    dis = np.flatnonzero(fp != bp)[:32]
    caps = [f"true {ev.labels[i]}\nfloat {fp[i]} {ev.float_probs[i].max():.2f}\nint8 {bp[i]} {b.probs[i].max():.2f}" for i in dis]
    cols = ["green" if bp[i] == ev.labels[i] else "crimson" for i in dis]
    a = gallery(ev.images[dis], caps, out / "gallery_disagree.png",
                      f"{len(np.flatnonzero(fp != bp))} images where float and {reference} disagree (green: {reference} right)", cols)
    wrong = np.flatnonzero(bp != ev.labels)
    worst = wrong[np.argsort(-b.probs[wrong].max(1))][:32]
    caps = [f"true {ev.labels[i]} {names[ev.labels[i]][:14]}\nas {bp[i]} {names[bp[i]][:14]}\n{b.probs[i].max():.2f}" for i in worst]
    e = gallery(ev.images[worst], caps, out / "gallery_errors.png",
                      f"{reference}: the {len(worst)} surest of its {len(wrong)} errors", ["crimson"] * len(worst))
    return [a, e]


def make_plots(ev: SplitEval, rows: list[dict[str, Any]], raw: dict[str, list[float]], out: Path) -> list[tuple[str, Path]]:
    pics: list[tuple[str, Path]] = []
    if any(r.get("p50_ms_t1") for r in rows):
        pics.append(("Accuracy against latency (the Pareto view)", plots.pareto(rows, out / "pareto.png")))
    quantized = {n: b.report.recall for n, b in ev.builds.items() if b.report is not None and BUILDS[n].quantized}
    if quantized:
        pics.append(("Per-class recall, quantized minus float", plots.class_deltas(
            ev.class_names, ev.float_report.recall, quantized, ev.float_report.support, out / "class_recall_delta.png")))
    int8 = ev.builds.get("tflite-int8")
    matrices = {"float (Keras)": ev.float_report.confusion}
    if int8 is not None and int8.report is not None:
        matrices["tflite-int8"] = int8.report.confusion
    pics.append(("Confusion matrices", plots.confusions(ev.class_names, matrices, out / "confusion.png")))
    raw = {n: t for n, t in raw.items() if ev.builds.get(n) is not None and ev.builds[n].path is not None}
    if raw:
        pics.append(("Latency per call, 1 ROI, 1 thread", plots.latency(raw, out / "latency.png", "time per call, 1 ROI, 1 thread")))
    pics.append(("Right / wrong / not sure against the unknown threshold", plots.thresholds(curves(ev), out / "threshold.png")))
    for p in galleries(ev, out):
        pics.append((p.stem.replace("_", " "), p))
    return pics


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def html_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(c[1])}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k), spec))}</td>" for k, _, spec in columns) + "</tr>"
                   for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:14px system-ui,sans-serif;margin:1.5em;max-width:1500px}}table{{border-collapse:collapse;margin:.6em 0 1.4em}}
td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:right}}td:first-child,th:first-child,td:nth-child(2){{text-align:left}}
th{{background:#f2f2f2}}figure{{margin:1em 0}}img{{max-width:100%}}figcaption{{color:#555}}</style></head>
<body data-images-total="{n_images}"><h1>{title}</h1>
{body}
<script>
window.addEventListener('load', () => {{
  const imgs = Array.from(document.images);
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
}});
</script></body></html>
"""


def write_report(run: Run, ev: SplitEval, rows: list[dict[str, Any]], stages: dict[str, float], pics: list[tuple[str, Path]],
                 out: Path, compare: list[dict[str, Any]] | None, frames_note: str | None,
                 cpu: str | None = None) -> dict[str, Path]:
    title = f"signkit report: {run.path.name} ({ev.split} split, {len(ev.labels)} images)"
    intro = (f"Float model (Keras): accuracy {ev.float_report.accuracy:.4f}. Every build runs through the TensorFlow-free "
             f"runtime on the same images. Latency: pytest-benchmark's medians and 95th percentiles per call "
             f"(1 thread and {ALL}){f', timed on {cpu}' if cpu else ''}; ROIs/s with 8 ROIs in one call. Status: passed = written by export with its gate passed "
             f"and holding the parity floors here.")
    stage_text = ", ".join(f"{k} {v:.2f} ms" for k, v in stages.items())
    md = [f"# {title}", "", intro, "", markdown_table(rows, COLUMNS)]
    frame_rows = [r for r in rows if r.get("f1") is not None]
    if frame_rows:
        md += ["", f"## Frame pipeline ({frames_note})", "", markdown_table(frame_rows, [("build", "build", ""), *FRAME_COLUMNS])]
    if stage_text:
        md += ["", f"Frame stages (one 1360x800 frame): {stage_text}."]
    if compare:
        md += ["", "## Compared with the other report", "", markdown_table(compare, COMPARE_COLUMNS)]
    md += ["", "## Parity failures", ""]
    md += [f"- {r['build']}: {'; '.join(r['parity_failures'])}" for r in rows if r.get("parity_failures")] or ["- none"]
    md += ["", *[f"![{t}]({p.name})" for t, p in pics]]
    body = [f"<p>{html.escape(intro)}</p>", html_table(rows, COLUMNS, "builds")]
    if frame_rows:
        body += [f"<h2>Frame pipeline ({html.escape(str(frames_note))})</h2>",
                 html_table(frame_rows, [("build", "build", ""), *FRAME_COLUMNS], "frames")]
    if stage_text:
        body.append(f"<p>Frame stages (one 1360x800 frame): {html.escape(stage_text)}.</p>")
    if compare:
        body += ["<h2>Compared with the other report</h2>", html_table(compare, COMPARE_COLUMNS, "compare")]
    body += [_img_tag(p, t) for t, p in pics]
    record = {"run": str(run.path), "split": ev.split, "images": len(ev.labels),
              "float_accuracy": ev.float_report.accuracy, "builds": rows, "frame_stages_ms": stages, "timed_on": cpu,
              "parity": {n: b.parity.to_dict() for n, b in ev.builds.items() if b.parity is not None},
              "compare": compare, "plots": [p.name for _, p in pics]}
    paths = {"md": out / "report.md", "json": out / "report.json", "html": out / "report.html"}
    write_text_atomic(paths["md"], "\n".join(md) + "\n")
    write_text_atomic(paths["json"], json.dumps(record, indent=2, default=float))
    write_text_atomic(paths["html"], PAGE.format(title=html.escape(title), n_images=len(pics), body="\n".join(body)))
    return paths


def frame_scores(run: Run, frames: Path, repeat: int = 3) -> tuple[dict[str, dict[str, Any]], str]:
    """bench.gtsdb's built-in-proposal scores of every build, all cores, every proposal read (profile full).

    The proposals are the run's own: the ranker and sign map of its bundle (RUN/bundle, ``run.sh``), else its
    proposal_ranker.json, else the runtime's ranking."""
    loaded, gt = load_frames(frames, None)
    bundle = Bundle.open(run.path / "bundle") if (run.path / "bundle" / BUNDLE_FILE).is_file() else None
    ranker_file = bundle.part("ranker") if bundle else run.path / "proposal_ranker.json"
    ranker = Ranker.load(ranker_file) if ranker_file and ranker_file.is_file() else default_ranker()
    sign_map = bundle.part("sign_map") if bundle else None
    out: dict[str, dict[str, Any]] = {}
    note = ""
    for name, path in run.builds().items():
        s = score_build(path, loaded, gt, frames, ranker=ranker, threads=(ALL,), proposals=("builtin",), repeat=repeat,
                        sign_map=sign_map)[0]
        out[name] = {"proposal_recall": s.proposal_recall, "precision": s.precision, "recall": s.recall, "f1": s.f1,
                     "crops": s.cost.get("crops", 0.0) + s.cost.get("second_look_crops", 0.0),
                     "gmacs": s.cost.get("gmacs", 0.0), "fps": s.fps, "frame_ms": s.ms}
        cues = "the run's sign map and colour cues" if sign_map else "colour cues"
        note = (f"{s.frames} frames of {frames}, {s.signs} signs, {cues}, every proposal read, {ALL} threads, "
                f"fastest of {repeat} passes, on {describe_cpu()}")
    return out, note


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.report", formatter_class=HelpFormatter,
        description="Accuracy, size and latency of every build of a run, side by side, as Markdown, JSON and one HTML page.",
        epilog="examples:\n  python -m bench.report --run runs/quickstart --data data/GTSRB\n"
               "  python -m bench.report --run runs/quickstart --frames data/GTSDB/gtsdb "
               "--compare runs/quickstart/report/report.json",
    )
    p.add_argument("--run", type=Path, required=True, help="a training run folder with its exported builds")
    p.add_argument("--data", type=Path, default=None, help="its dataset (default: the data it was trained on)")
    p.add_argument("--split", default="val", choices=("val", "test"), help="val: the run's held-out tracks; test: the test subset")
    p.add_argument("--frames", type=Path, default=None, help="GTSDB-layout frames to score the frame pipeline on")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: ARTIFACTS/report)")
    p.add_argument("--latency-json", type=Path, default=None,
                   help="pytest-benchmark JSON of bench/test_latency.py for these builds, instead of timing them now")
    p.add_argument("--no-latency", action="store_true", help="leave latency out (accuracy and size only)")
    p.add_argument("--compare", type=Path, default=None, help="another report.json to show beside this one, with deltas")
    return p


@cli_errors("python -m bench.report")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = Run.open(args.run)
    if not run.builds():
        raise ConfigError(f"{run.path} has no builds; export them with python -m export.all --run {run.path}")
    other = None
    if args.compare:
        try:
            other = json.loads(args.compare.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"--compare {args.compare} is not a report.json ({err})") from None
    given = read_latency_json(args.latency_json) if args.latency_json and not args.no_latency else None  # before the long work
    out = ensure_writable_dir(args.out or run.path / "report", "--out")
    print(f"evaluating every build of {run.path} on its {args.split} split ...", file=sys.stderr)
    ev = evaluate_builds(run, args.split, args.data, progress=True)
    latency: dict[str, dict[str, Any]] = {}
    raw: dict[str, list[float]] = {}
    stages: dict[str, float] = {}
    cpu = None
    if not args.no_latency:
        timings = given if given is not None else read_latency_json(run_latency_suite(run.path, out / "latency.json"),
                                                                    "the latency suite's output")
        latency, raw, stages = latency_table(timings)
        cpu = timed_on(timings)
    frames, note = (frame_scores(run, args.frames) if args.frames else ({}, None))
    rows = build_rows(ev, latency, frames)
    pics = make_plots(ev, rows, raw, out)
    compare = compare_rows(rows, other) if other is not None else None
    paths = write_report(run, ev, rows, stages, pics, out, compare, note, cpu)
    print(markdown_table(rows, COLUMNS))
    print(f"report: {paths['html']} ({paths['md'].name}, {paths['json'].name}, {len(pics)} plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
