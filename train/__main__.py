"""Train a traffic-sign classifier.

    python -m train --data data/GTSRB
    python -m train --data data/GTSRB --arch notebook-d --epochs 30 --out runs/nbd
    python -m train --resume --out runs/edge-20261121-150000
    python -m train --extend runs/quickstart --add my_signs/ --out runs/edge-mine
    python -m train --extend runs/quickstart --background data/neg --zoom 0.2 --shift 0.1 --out runs/quickstart

Writes OUT/model.keras, OUT/metadata.json, OUT/history.json, OUT/training_curves.png and
OUT/checkpoints/ (one per epoch, for --resume). A resumed run takes every setting that defines the
model (data, architecture, size, augmentation, ...) from its checkpoint; only --epochs, --patience,
--device, --no-cache and --quiet may change, and a flag that contradicts the run is an error.

--extend RUN --add DIR starts from RUN's model, adds the classes of DIR's class folders (as few as
~10 photos each) and fine-tunes on RUN's data and the new photos together (train.extend): the new
run records what the old classes lost and what the new ones reach on held-out photos.
--extend RUN --background DIR does the same with a "not a sign" class (train.frames.negatives) for the
frame pipeline: the signs keep what RUN learned, and the run records what they lost.
--distribute mirrored trains data-parallel on every device of this machine; --distribute multiworker
over several processes, one machine or several (train.distribute; python -m train.launch starts N on
this machine). --batch-size is then per device.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from train.augment import AugmentConfig
from train.config import TrainConfig, from_json, resume_config
from train.data.formats import FORMATS
from train.device import BACKENDS
from train.extend import extension_lines
from train.launch import WORKER_ENV, supervise
from train.runs import Run, latest_run, new_run_dir, read_json, runs_dir
from train.training import TrainResult, train
from train.watchdog import STALL_EXIT

ARCH_NAMES = ("edge", "notebook-a", "lenet", "cifar", "notebook-d", "edge-s", "edge-xs", "edge-l", "edge-ds", "edge-ds-s")  # train.models.ARCHS


def default_data() -> Path:
    return Path(os.environ.get("GTSRB_DIR", "data/GTSRB"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train", description="Train a traffic-sign CNN (GPU when one is visible, else CPU).",
        formatter_class=HelpFormatter,
        epilog="examples:\n  python -m train --data data/GTSRB\n"
               "  python -m train --data data/GTSRB --arch notebook-d --epochs 30 --out runs/nbd",
    )
    p.add_argument("--data", type=Path, default=default_data(), help="dataset folder, zip or pickle ($GTSRB_DIR)")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", *FORMATS), help="dataset layout")
    p.add_argument("--arch", default=TrainConfig.arch, choices=ARCH_NAMES,
                   help="architecture (edge-xs: the default, 146 KB int8; edge: the default before, 306 KB)")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--img-size", type=int, default=None, help="input side in pixels (default: the architecture's)")
    p.add_argument("--batch-size", type=int, default=64, help="images a step (per process with --distribute)")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (1-epoch warm-up, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, help="AdamW weight decay")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="spread this much of each label over the other classes")
    p.add_argument("--contrast", default=TrainConfig.contrast, choices=("none", "clahe"),
                   help="clahe: equalise each crop's lightness (dark, backlit signs) in the shared preprocessing the Pi runs "
                        "too; none: the crops as they are (the old default model: --arch edge --contrast none)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of each class's tracks held out")
    p.add_argument("--patience", type=int, default=8,
                   help="early-stopping patience in epochs, counted only in the last third of the schedule")
    p.add_argument("--seed", type=int, default=0, help="weights and batch order")
    p.add_argument("--split-seed", type=int, default=None,
                   help="which tracks are held out (default: --seed); keep it fixed to compare seeds on the same tracks")
    p.add_argument("--devtest-fraction", type=float, default=0.0,
                   help="also hold out this share of each class's tracks as a dev-test split, only to report on")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/ARCH-TIMESTAMP; with --resume the latest run)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"),
                   help="auto: a GPU when the backend sees one, else the CPU")
    p.add_argument("--backend", default="tensorflow", choices=BACKENDS, help="Keras 3 backend")
    p.add_argument("--background", type=Path, default=None,
                   help="folder of not-a-sign crops (python -m train.frames.negatives) to learn as one extra class "
                        "(with --extend: added to the run's classes)")
    p.add_argument("--zoom", type=float, default=AugmentConfig.zoom,
                   help="random zoom 1 +- this (0.2 for a frame pipeline: proposal boxes are looser than GTSRB's)")
    p.add_argument("--shift", type=float, default=AugmentConfig.shift, help="random shift, a fraction of the crop side")
    p.add_argument("--erase", type=float, default=AugmentConfig.erase_p,
                   help="probability of random erasing: a noise patch over part of the sign (occlusion)")
    p.add_argument("--perspective", type=float, default=AugmentConfig.perspective,
                   help="move each corner by up to this fraction of the side: a sign seen at an angle")
    p.add_argument("--no-augment", action="store_true", help="train on the crops as they are")
    p.add_argument("--min-per-class", type=int, default=0,
                   help="repeat a class with fewer training images up to this many per epoch (--extend: 200)")
    kd = p.add_argument_group("distillation")
    kd.add_argument("--teacher", type=Path, default=None, metavar="RUN",
                    help="a trained run (a bigger model, another size) whose softened outputs on the same augmented crops the "
                         "model learns from beside the labels; it must have held out this run's validation and dev-test tracks")
    kd.add_argument("--distill-temperature", type=float, default=TrainConfig.distill_temperature,
                    help="with --teacher: the temperature both outputs are softened by")
    kd.add_argument("--distill-weight", type=float, default=TrainConfig.distill_weight,
                    help="with --teacher: the share of the loss that comes from the teacher (the rest from the labels)")
    ext = p.add_argument_group("new classes on a trained run")
    ext.add_argument("--extend", type=Path, default=None, metavar="RUN",
                     help="start from this run's model and data, and add --add's classes and/or --background's")
    ext.add_argument("--add", type=Path, default=None, metavar="DIR",
                     help="class folders (DIR/<class name>/*.jpg) of the classes to add; with --extend")
    ext.add_argument("--add-holdout", type=float, default=0.3,
                     help="share of each added class's photos held out to score it (whole tracks where known)")
    dist = p.add_argument_group("training past one device")
    dist.add_argument("--distribute", default="none", choices=("none", "mirrored", "multiworker"),
                      help="data-parallel training: mirrored = every device of this machine; multiworker = several "
                           "processes, on this machine or others (--backend jax, and the three flags below)")
    dist.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                      help="multiworker: the address process 0 listens on, the same for every process")
    dist.add_argument("--num-processes", type=int, default=1, metavar="N", help="multiworker: how many processes the run has")
    dist.add_argument("--process-id", type=int, default=0, metavar="I",
                      help="multiworker: this process's number, 0..N-1; process 0 writes the run")
    p.add_argument("--no-cache", action="store_true", help="decode the images again instead of using the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--stall-minutes", type=float, default=TrainConfig.stall_minutes,
                   help=f"if no batch finishes for this long (TensorFlow can deadlock between epochs), say so and exit "
                        f"with status {STALL_EXIT}: continue with --resume (run.sh does); 0: wait forever")
    return p


# Flag -> TrainConfig field, for the flags a resumed run compares with what it recorded.
FIELDS = {"data": "data", "fmt": "fmt", "arch": "arch", "epochs": "epochs", "img_size": "img_size",
          "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay", "val_fraction": "val_fraction",
          "split_seed": "split_seed", "devtest_fraction": "devtest_fraction", "label_smoothing": "label_smoothing",
          "contrast": "contrast",
          "patience": "patience", "seed": "seed", "device": "device", "backend": "backend", "background": "background",
          "zoom": "augment.zoom", "shift": "augment.shift", "erase": "augment.erase_p", "perspective": "augment.perspective", "min_per_class": "min_per_class",
          "distribute": "distribute", "teacher": "teacher", "distill_temperature": "distill_temperature",
          "distill_weight": "distill_weight", "coordinator": "coordinator", "num_processes": "num_processes",
          "process_id": "process_id"}


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The dests of the flags present on the command line (not those left at their defaults)."""
    probe = argparse.Namespace()
    for action in parser._actions:
        if action.dest != "help":
            setattr(probe, action.dest, _UNSET)
    return {k for k, v in vars(parser.parse_args(argv, probe)).items() if v is not _UNSET}


_UNSET = object()


@cli_errors("python -m train")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.distribute == "multiworker" and os.environ.get(WORKER_ENV) != "1":
        return supervise(list(sys.argv[1:] if argv is None else argv), args.process_id, args.num_processes)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")
    if args.img_size is not None and args.img_size < 1:
        parser.error(f"--img-size must be a positive number of pixels, not {args.img_size}")
    if not (0 <= args.zoom < 1 and 0 <= args.shift < 1 and 0 <= args.erase <= 1 and 0 <= args.perspective < 0.5):
        parser.error("--zoom and --shift must be between 0 and 1 (e.g. --zoom 0.2 --shift 0.1), --erase a probability, "
                     "--perspective below 0.5")
    if not 0 < args.val_fraction < 1 or not 0 <= args.devtest_fraction < 1 - args.val_fraction:
        parser.error("--val-fraction must be between 0 and 1, --devtest-fraction at least 0 and below 1 - --val-fraction")
    if args.distill_temperature <= 0 or not 0 <= args.distill_weight <= 1:
        parser.error("--distill-temperature must be above 0 and --distill-weight between 0 and 1")
    if args.stall_minutes < 0:
        parser.error(f"--stall-minutes must be 0 (wait forever) or a positive number of minutes, not {args.stall_minutes:g}")
    out = args.out or (latest_run(require="checkpoints/state.json") if args.resume else new_run_dir(args.arch))
    augment = None if args.no_augment else AugmentConfig(zoom=args.zoom, shift=args.shift, erase_p=args.erase,
                                                         perspective=args.perspective)
    cfg = TrainConfig(data=args.data, out=out, arch=args.arch, epochs=args.epochs, img_size=args.img_size,
                      batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                      val_fraction=args.val_fraction, patience=args.patience, fmt=args.fmt, backend=args.backend,
                      device=args.device, augment=augment, use_cache=not args.no_cache, progress=not args.quiet,
                      background=args.background, resume=args.resume, min_per_class=args.min_per_class,
                      distribute=args.distribute, split_seed=args.split_seed, devtest_fraction=args.devtest_fraction,
                      label_smoothing=args.label_smoothing, contrast=args.contrast, stall_minutes=args.stall_minutes,
                      coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
                      teacher=args.teacher, distill_temperature=args.distill_temperature, distill_weight=args.distill_weight)
    if args.add and not args.extend:
        parser.error("--add needs --extend RUN: the run whose classes the photos are added to")
    if args.extend:
        if not (args.add or args.background):
            parser.error("--extend needs --add DIR (class folders of the photos to add) and/or --background DIR "
                         "(not-a-sign crops)")
        if args.resume:
            parser.error("--extend starts a new run from RUN; leave --resume out (resume the extended run itself)")
        cfg = extension_config(args, given_flags(parser, argv), Path(args.out or runs_dir() / f"{args.extend.name}-extended"))
        result = train(cfg)
        print_result(result)
        return 0
    state_file = Path(out) / "checkpoints" / "state.json"
    if args.resume and state_file.is_file():
        state = read_json(state_file, f"start a new run with another --out (or delete {state_file.parent})")
        if "config" not in state:
            raise ConfigError(f"{out}: its checkpoint predates recorded settings and cannot be resumed safely; start a new run")
        given = given_flags(parser, argv)
        overrides = {FIELDS[d]: getattr(cfg, FIELDS[d]) if "." not in FIELDS[d] else getattr(augment, FIELDS[d].split(".")[1], None)
                     for d in given if d in FIELDS}
        if "no_augment" in given:
            overrides["augment"] = None
        settable = (("use_cache", "no_cache"), ("progress", "quiet"), ("stall_minutes", "stall_minutes"))
        overrides.update({k: getattr(cfg, k) for k, d in settable if d in given})
        cfg = resume_config(state["config"], Path(out), overrides)
    print_result(train(cfg))
    return 0


def extension_config(args: argparse.Namespace, given: set[str], out: Path) -> TrainConfig:
    """--extend RUN --add DIR: RUN's own settings, its model to start from, a short low-rate fine-tune by default."""
    base = Run.open(args.extend)
    if "config" not in base.meta:
        raise ConfigError(f"--extend {args.extend}: the run predates recorded settings; retrain it first")
    recorded = from_json(base.meta["config"], out)
    if args.background is not None and recorded.background is not None:
        raise ConfigError(f"--extend {args.extend} has a background class already (from {recorded.background}); "
                          "leave --background out, or extend a run without one")
    if recorded.add is not None:
        raise ConfigError(f"--extend {args.extend} was itself extended (with {recorded.add}); extend the run it came from "
                          f"with all the added class folders in one --add folder")
    chosen = {k: getattr(args, k) for k in ("epochs", "lr", "min_per_class", "batch_size", "patience", "seed") if k in given}
    augment = recorded.augment
    if augment is not None:  # looser crops for a frame pipeline's proposals: --zoom 0.2 --shift 0.1
        augment = replace(augment, zoom=args.zoom if "zoom" in given else augment.zoom,
                          shift=args.shift if "shift" in given else augment.shift)
    return replace(recorded, out=out, init_from=base.path.resolve(), add=args.add, add_holdout=args.add_holdout,
                   background=args.background if args.background is not None else recorded.background, augment=augment,
                   data=args.data if "data" in given else recorded.data, epochs=chosen.get("epochs", 5),
                   lr=chosen.get("lr", recorded.lr / 4), min_per_class=chosen.get("min_per_class", 200),
                   batch_size=chosen.get("batch_size", recorded.batch_size), patience=chosen.get("patience", recorded.patience),
                   seed=chosen.get("seed", recorded.seed), device=args.device, distribute=args.distribute,
                   use_cache=not args.no_cache, progress=not args.quiet, stall_minutes=args.stall_minutes, resume=False)


def print_result(result: TrainResult) -> None:
    if result.process[0]:
        print(f"process {result.process[0]} of {result.process[1]}: done (process 0 writes the run)")
        return
    print(f"validation accuracy {result.val_accuracy:.4f} (best epoch {result.best_epoch} of {result.epochs_run}, "
          f"{result.params:,} params, {result.seconds / 60:.1f} min) -> {result.out / 'model.keras'}")
    if result.extension:
        print("\n".join(extension_lines(result.extension)))


if __name__ == "__main__":
    sys.exit(main())
