"""A study of training configurations: every candidate x seed trained, exported to int8, measured, tabulated.

    python -m bench.sweep --data data/GTSRB --plan docs/sweep_proxy.json --out runs/sweep-proxy --seeds 0
    python -m bench.sweep --out runs/sweep-proxy --table            # the table and plot of what has finished

The plan is JSON: ``{"common": [flags for every run], "candidates": {"name": [its flags], ...},
"export": [flags]}`` with ``python -m train`` flags (and ``python -m export.tflite`` flags for the export). Each candidate x seed is trained into OUT/NAME/sSEED (``--seed`` set, the
held-out tracks fixed by the plan's ``--split-seed``), exported (``python -m export.tflite --int8``),
and measured (``--measure``): dev-test accuracy of the float model and the int8 build through the
runtime, per-class recall, accuracy under the degradations real frames bring (``bench.degrade``),
MACs and parameters, int8 size and ms per ROI. Every step is skipped when its output exists and a
killed training is resumed, so the same command picks a study up where it stopped; ``--jobs N``
runs N candidates side by side. OUT/sweep.{md,csv,json} and sweep.png/.svg (the Pareto view) hold the
means and spreads over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.degrade import DEGRADATIONS
from runtime.atomic import atomic_path, ensure_writable_dir, write_text_atomic
from runtime.classifier import Classifier, ms_per_roi
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.machine import describe_cpu
from runtime.metrics import classification_report
from runtime.preprocess import to_model_input
from train.plots import save_figure
from train.runs import Run
from train.watchdog import STALL_EXIT

REPO = Path(__file__).resolve().parents[1]


def read_plan(path: Path) -> tuple[list[str], dict[str, list[str]], list[str]]:
    try:
        plan = json.loads(Path(path).read_text())
        common, candidates = list(plan.get("common", [])), {k: list(v) for k, v in plan["candidates"].items()}
        export = list(plan.get("export", []))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        raise ConfigError(f"--plan {path} is not a sweep plan ({err}); write {{\"common\": [...], \"candidates\": "
                          f"{{\"name\": [flags]}}}}") from None
    if not candidates:
        raise ConfigError(f"--plan {path} names no candidates")
    return common, candidates, export


def _run(cmd: list[str], log: Path, resume: list[str] | None = None) -> None:
    """Run ``cmd``, its output appended to ``log``; a training that stalled (``STALL_EXIT``) goes on with ``resume``,
    twice at most."""
    for attempt in range(3):
        with open(log, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
        if code != STALL_EXIT or resume is None or attempt == 2:
            break
        cmd = resume
    if code != 0:
        raise ConfigError(f"{' '.join(cmd[2:5])} ... failed (exit {code}); see {log}")


def run_one(data: Path, folder: Path, seed: int, flags: list[str], epochs: int | None,
            export_flags: Sequence[str] = ()) -> dict[str, Any]:
    """Train, export and measure one candidate x seed, skipping what is done; return its measurements."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = folder.parent / f"{folder.name}.log"
    py = sys.executable
    if not (folder / "model.keras").is_file():
        resume = [py, "-m", "train", "--resume", "--out", str(folder), "--quiet"] + (["--epochs", str(epochs)] if epochs else [])
        if (folder / "checkpoints" / "state.json").is_file():
            cmd = resume
        else:
            cmd = [py, "-m", "train", "--data", str(data), "--out", str(folder), "--seed", str(seed), "--quiet", *flags]
            cmd += ["--epochs", str(epochs)] if epochs else []
        _run(cmd, log, resume=resume)
    if not (folder / "model_int8.tflite").is_file():
        _run([py, "-m", "export.tflite", "--int8", "--run", str(folder), *export_flags], log)
    if not (folder / "study.json").is_file():
        _run([py, "-m", "bench.sweep", "--measure", str(folder)], log)
    return dict(json.loads((folder / "study.json").read_text()))


def measure(folder: Path) -> dict[str, Any]:
    """Everything the table needs of one finished run, on its dev-test split."""
    from train.models import count_macs  # imports Keras: the table alone (--table) does without it

    run = Run.open(folder)
    dev = run.split("dev-test")
    spec, model = run.preprocess, run.load_model()
    int8 = Classifier.from_build(folder / "model_int8.tflite")
    k = run.num_classes

    def scores(images: np.ndarray) -> tuple[float, float, np.ndarray]:
        x = to_model_input(images, spec)
        fp = model.predict(x, batch_size=256, verbose=0).argmax(1)
        ip = np.concatenate([int8.predict_proba(x[i:i + 256]) for i in range(0, len(x), 256)]).argmax(1)
        return float((fp == dev.labels).mean()), float((ip == dev.labels).mean()), ip

    float_acc, int8_acc, pred = scores(dev.images)
    report = classification_report(dev.labels, pred, k)
    present = np.flatnonzero(report.support > 0)
    out: dict[str, Any] = {
        "run": str(folder), "seed": run.meta["config"]["seed"], "arch": run.meta["arch"], "size": spec.size,
        "devtest_images": len(dev), "float_acc": float_acc, "int8_acc": int8_acc,
        "worst_class": int(present[np.argmin(report.recall[present])]), "worst_recall": float(report.recall[present].min()),
        "classes_below_95": int((report.recall[present] < 0.95).sum()),
        "per_class_recall": {int(c): float(report.recall[c]) for c in present}, "class_names": list(run.class_names),
        "val_acc": run.meta.get("val_accuracy"), "best_epoch": run.meta.get("best_epoch"), "epochs_run": run.meta.get("epochs_run"),
        "training_minutes": round(run.meta.get("training_seconds", 0) / 60, 1),
        "macs_m": count_macs(model) / 1e6, "params": int(model.count_params()),
        "int8_kb": (folder / "model_int8.tflite").stat().st_size / 1024,
        "ms_per_roi": ms_per_roi(folder / "model_int8.tflite", to_model_input(dev.images[:1], spec)),
        "cpu": describe_cpu(),
    }
    for name, degrade in DEGRADATIONS.items():
        out[f"int8_acc_{name}"] = scores(degrade(dev.images))[1]
    return out


KEYS = ("int8_acc", "float_acc", "worst_recall", "classes_below_95", "int8_acc_16px", "int8_acc_20px", "int8_acc_blur5",
        "int8_acc_dark", "int8_acc_jpeg20", "macs_m", "params", "int8_kb", "ms_per_roi", "training_minutes")


def summarise(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for name, runs in results.items():
        if not runs:
            continue
        row: dict[str, Any] = {"candidate": name, "seeds": len(runs)}
        for k in KEYS:
            vals = np.array([r[k] for r in runs], float)
            row[k], row[f"{k}_sd"] = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        row["cpu"] = "; ".join(sorted({r.get("cpu") or "not recorded" for r in runs}))  # where ms/ROI was timed
        rows.append(row)
    return sorted(rows, key=lambda r: -r["int8_acc"])


MOVED_PP = 2.0  # a class's mean dev-test recall moving this much (3 of a class's 150 images) is listed


def classes_moved(results: dict[str, list[dict[str, Any]]], base: str,
                  min_pp: float = MOVED_PP) -> dict[str, list[tuple[str, float, float]]]:
    """Per candidate other than ``base``: the classes whose mean dev-test recall over its seeds moved by at least
    ``min_pp`` points from ``base``'s, most fallen first, as (class, base %, candidate %)."""
    def mean_recall(runs: list[dict[str, Any]]) -> dict[str, float]:
        common = set.intersection(*(set(r["per_class_recall"]) for r in runs))
        return {str(c): 100 * float(np.mean([r["per_class_recall"][c] for r in runs])) for c in common}

    if base not in results:
        raise ConfigError(f"--base {base} has no finished runs; name one of {', '.join(sorted(results))}")
    ref = mean_recall(results[base])
    names = results[base][0].get("class_names") or []
    moved = {}
    for name, runs in results.items():
        if name == base or not runs:
            continue
        got = mean_recall(runs)
        rows = [(c, ref[c], got[c]) for c in ref.keys() & got.keys() if abs(got[c] - ref[c]) >= min_pp]
        moved[name] = [(f"{names[int(c)]} ({c})" if int(c) < len(names) else c, a, b)
                       for c, a, b in sorted(rows, key=lambda r: r[2] - r[1])]
    return moved


def write_table(out: Path, rows: list[dict[str, Any]], command: str,
                moved: tuple[str, dict[str, list[tuple[str, float, float]]]] | None = None) -> Path:
    """OUT/sweep.{md,json,csv}; ``moved``: a base candidate and :func:`classes_moved` against it, listed under the table."""
    pct = ("int8_acc", "float_acc", "worst_recall", "int8_acc_16px", "int8_acc_20px", "int8_acc_blur5", "int8_acc_dark",
           "int8_acc_jpeg20")
    head = ["candidate", "seeds", "dev-test int8 %", "float %", "worst class %", "classes <95 %", "16 px %", "20 px %",
            "blur %", "dark %", "JPEG %", "MACs M", "params", "int8 KB", "ms/ROI", "train min"]
    lines = [f"`{command}`", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["candidate"], str(r["seeds"])]
        for k in KEYS:
            if k in pct:
                cells.append(f"{100 * r[k]:.2f}" + (f" ± {100 * r[k + '_sd']:.2f}" if r["seeds"] > 1 else ""))
            elif k == "params":
                cells.append(f"{r[k] / 1000:.0f} k")
            else:
                cells.append(f"{r[k]:.1f}" if k != "ms_per_roi" else f"{r[k]:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    cpus = sorted({c for r in rows for c in r["cpu"].split("; ")})
    lines += ["", "Means over seeds (± sample standard deviation); dev-test: tracks held out from training and from the",
              f"choice of epoch, the same for every candidate and seed. ms/ROI: int8 build, one thread, on {' and '.join(cpus)}."]
    if len(cpus) > 1:
        lines.append("**The runs were timed on different CPUs: compare ms/ROI only between runs on the same one.**")
    if moved is not None:
        base, changes = moved
        lines += ["", f"Classes whose mean dev-test recall moved by {MOVED_PP:g} points or more from {base}'s:", ""]
        for name, classes in changes.items():
            listed = "; ".join(f"{c} {a:.1f} → {b:.1f}" for c, a, b in classes) or "none"
            lines.append(f"- {name}: {listed}")
    write_text_atomic(out / "sweep.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "sweep.json", json.dumps(rows, indent=2))
    with atomic_path(out / "sweep.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out / "sweep.md"


def plot(out: Path, rows: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    sc = ax.scatter([r["macs_m"] for r in rows], [100 * r["int8_acc"] for r in rows], s=[max(r["int8_kb"], 10) for r in rows],
                    c=[r["ms_per_roi"] for r in rows], cmap="viridis", alpha=0.75, edgecolors="k")
    for r in rows:
        ax.errorbar(r["macs_m"], 100 * r["int8_acc"], yerr=100 * r["int8_acc_sd"], fmt="none", ecolor="grey", lw=0.8)
        ax.annotate(r["candidate"], (r["macs_m"], 100 * r["int8_acc"]), textcoords="offset points", xytext=(5, 5), fontsize=7)
    fig.colorbar(sc, ax=ax, label="int8 ms per ROI (1 thread)")
    ax.set_xlabel("MACs per ROI (millions)")
    ax.set_ylabel("dev-test accuracy of the int8 build, %")
    ax.set_title("candidates: accuracy vs MACs (marker area = int8 KB)")
    ax.grid(alpha=0.3)
    # text, for docs/: no date and fixed ids inside, so the same study draws the same file
    with atomic_path(out / "sweep.svg") as tmp, plt.rc_context({"svg.hashsalt": "signkit-sweep"}):
        fig.savefig(tmp, format="svg", bbox_inches="tight", metadata={"Date": None})
    return save_figure(fig, out / "sweep.png")


def collect(out: Path) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(out.glob("*/s*/study.json")):
        results.setdefault(f.parent.parent.name, []).append(json.loads(f.read_text()))
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.sweep", formatter_class=HelpFormatter,
        description="Train, export and measure a grid of candidates x seeds (resumable), and tabulate them.",
        epilog="examples:\n  python -m bench.sweep --data data/GTSRB --plan docs/sweep_proxy.json --out runs/sweep-proxy --seeds 0\n"
               "  python -m bench.sweep --out runs/sweep-proxy --table",
    )
    p.add_argument("--data", type=Path, default=None, help="the dataset every candidate trains on")
    p.add_argument("--plan", type=Path, default=None, help="JSON: common flags and each candidate's flags")
    p.add_argument("--out", type=Path, default=None, help="the study's folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of every candidate")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every run (short proxy runs; default: the plan's)")
    p.add_argument("--jobs", type=int, default=1, help="candidates trained side by side")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these candidates of the plan")
    p.add_argument("--table", action="store_true", help="only tabulate the finished runs of --out")
    p.add_argument("--base", default=None, metavar="NAME",
                   help="list the classes each candidate moved against this one (default: the plan's first)")
    p.add_argument("--measure", type=Path, default=None, metavar="RUN", help="(internal) measure one finished run")
    return p


@cli_errors("python -m bench.sweep")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.measure:
        write_text_atomic(args.measure / "study.json", json.dumps(measure(args.measure), indent=2))
        return 0
    if args.out is None:
        parser.error("--out is needed")
    out = ensure_writable_dir(args.out, "--out")
    if not args.table:
        if args.data is None or args.plan is None:
            parser.error("give --data and --plan (or --table to tabulate what has finished)")
        common, candidates, export_flags = read_plan(args.plan)
        names = args.only or list(candidates)
        unknown = [n for n in names if n not in candidates]
        if unknown:
            parser.error(f"--only {unknown[0]} is not a candidate of {args.plan}")
        jobs = [(n, s) for n in names for s in args.seeds]
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = {pool.submit(run_one, args.data, out / n / f"s{s}", s, [*common, *candidates[n]], args.epochs,
                                   export_flags): (n, s) for n, s in jobs}
            for fut, (n, s) in futures.items():
                r = fut.result()
                print(f"{n} seed {s}: dev-test int8 {100 * r['int8_acc']:.2f} % (float {100 * r['float_acc']:.2f} %), "
                      f"{r['macs_m']:.1f} M MACs, {r['int8_kb']:.0f} KB, {r['ms_per_roi']:.3f} ms/ROI", flush=True)
    results = collect(out)
    rows = summarise(results)
    if not rows:
        raise ConfigError(f"{out} holds no finished runs yet")
    # --base must have finished runs (classes_moved says so); the plan's first may not have any yet
    base = args.base or (next(iter(read_plan(args.plan)[1])) if args.plan is not None else None)
    moved = (base, classes_moved(results, base)) if base is not None and (args.base or base in results) else None
    command = "python -m bench.sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    table = write_table(out, rows, command, moved)
    plot(out, rows)
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
