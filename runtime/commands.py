"""``signkit``: every command of the kit behind one name, each the same as its ``python -m`` module.

    signkit --help                       # the commands, a line each
    signkit export tflite --int8         # = python -m export.tflite --int8
    signkit camera --build runs/quickstart/bundle --source picamera2

A command's module is imported only when it runs, so ``signkit camera`` works on a Raspberry Pi
that has the runtime alone, and a command whose install extra is missing says which one to add.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    words: tuple[str, ...]  # what follows `signkit`
    module: str  # what follows `python -m`
    summary: str  # the first line of the command's own --help description
    extra: str  # the install extra it needs


COMMANDS: tuple[Command, ...] = (
    Command(("train",), "train", "Train a traffic-sign CNN (GPU when one is visible, else CPU).", "train"),
    Command(("train", "launch"), "train.launch", "Start N training processes on this machine, one multi-process run.",
            "train"),
    Command(("train", "download"), "train.download", "Download official dataset archives (verified, resumable).", "train"),
    Command(("train", "inspect"), "train.insight.inspect", "Class balance, sizes, brightness, tracks and cross-split duplicates of a dataset, as PNGs and Markdown.", "train"),
    Command(("train", "explain"), "train.insight.explain",
            "Activation maps, Grad-CAM, dead filters and first-layer weights of a trained model, and an explorer page.", "train"),
    Command(("train", "to-folders"), "train.data.to_folders", "Write a dataset as class folders (with boxes.csv), whole or some classes of it.",
            "train"),
    Command(("train", "ranker"), "train.frames.ranker", "Fit the proposal ranking on annotated road frames.", "train"),
    Command(("train", "negatives"), "train.frames.negatives", "Mine not-a-sign crops from annotated road frames for a "
            "background class.", "train"),
    Command(("train", "sign-map"), "train.frames.sign_map", "Fit a 'sign here' map (a learned proposal source) on annotated "
            "frames.", "train"),
    Command(("export", "tflite"), "export.tflite", "Export a TFLite build (float32 by default) and verify it through the "
            "runtime.", "train"),
    Command(("export", "onnx"), "export.onnx", "Export an ONNX build (float32 by default) and verify it through the runtime.",
            "train"),
    Command(("export", "all"), "export.all", "Export every build of the registry, each verified through the runtime, and a "
            "report.", "train"),
    Command(("export", "sign-map"), "export.sign_map", "Export a fitted sign map as int8 TFLite, gated against the float map.",
            "train"),
    Command(("export", "bundle"), "export.bundle", "Put the frame pipeline's parts into one folder a camera demo or "
            "bench.gtsdb takes alone.", "train"),
    Command(("export", "threshold"), "export.threshold", "Calibrate (or set) a build's unknown threshold.", "train"),
    Command(("export", "debug"), "export.debug", "Rank the layers of an int8 build by quantization error; re-export with the worst left in float.",
            "train"),
    Command(("bench", "evaluate"), "bench.evaluate", "Evaluate a trained run on a labelled split.", "train"),
    Command(("bench", "sweep"), "bench.sweep", "Train, export and measure a grid of candidates x seeds (resumable), and tabulate them.", "train"),
    Command(("bench", "report"), "bench.report", "Accuracy, size and latency of every build of a run, side by side, as Markdown, JSON and one HTML page.", "train"),
    Command(("bench", "gtsdb"), "bench.gtsdb", "Score the frame pipeline (proposals -> crops -> build) on GTSDB-layout frames.",
            "runtime"),
    Command(("bench", "misses"), "bench.misses", "Which annotated signs the frame pipeline misses, and at which stage.", "runtime"),
    Command(("bench", "drive"), "bench.drive", "Make a driving-toward video from GTSDB-layout frames, or score a camera-demo JSONL against it.",
            "runtime"),
    Command(("bench", "soak"), "bench.soak", "Run the camera demo on an endless source and print what it holds as it runs.",
            "runtime"),
    Command(("camera",), "camera_demo", "Classify the signs a camera sees, live, with any build (TensorFlow-free).", "runtime"),
)


def find(argv: Sequence[str]) -> tuple[Command | None, list[str]]:
    """The command named by the longest run of leading words, and the arguments after it."""
    best: Command | None = None
    for cmd in COMMANDS:
        n = len(cmd.words)
        if tuple(argv[:n]) == cmd.words and (best is None or n > len(best.words)):
            best = cmd
    return best, list(argv[len(best.words):] if best else argv)


def usage() -> str:
    width = max(len(" ".join(c.words)) for c in COMMANDS)
    mod = max(len(c.module) for c in COMMANDS)
    lines = ["usage: signkit COMMAND [--help | FLAGS ...]", "",
             "Train, export, benchmark and deploy small CNN sign classifiers. Each command is also a Python module:",
             "`signkit export tflite --int8` is `python -m export.tflite --int8`.", "",
             f"  {'command':<{width}}  {'python -m':<{mod}}  what it does"]
    lines += [f"  {' '.join(c.words):<{width}}  {c.module:<{mod}}  {c.summary}" for c in COMMANDS]
    lines += ["", "`signkit COMMAND --help` explains a command's flags."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    cmd, rest = find(args)
    if cmd is None:
        print(f"signkit: error: unknown command {args[0]!r}; `signkit --help` lists them", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(cmd.module if cmd.module != "train" and cmd.module != "camera_demo"
                                         else f"{cmd.module}.__main__")
    except ImportError as err:
        print(f"signkit: error: `signkit {' '.join(cmd.words)}` needs {err.name or 'a package'}, which is not installed; "
              f"pip install 'signkit[{cmd.extra}]'", file=sys.stderr)
        return 1
    sys.argv = [f"signkit {' '.join(cmd.words)}", *rest]
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
