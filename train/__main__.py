"""Train a traffic-sign classifier.

    python -m train --data ../shared/data/gtsrb
    python -m train --data data/GTSRB --arch notebook-d --epochs 30 --out runs/nbd
    python -m train --resume --out runs/edge-20261121-150000

Writes OUT/model.keras, OUT/metadata.json, OUT/history.json, OUT/training_curves.png and
OUT/checkpoints/ (one per epoch, for --resume).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.cli import HelpFormatter
from runtime.errors import cli_errors
from train.augment import AugmentConfig
from train.data.formats import FORMATS
from train.device import BACKENDS
from train.runs import latest_run, new_run_dir
from train.training import TrainConfig, train

ARCH_NAMES = ("edge", "notebook-a", "lenet", "cifar", "notebook-d")  # train.models.ARCHS, without importing keras


def default_data() -> Path:
    return Path(os.environ.get("GTSRB_DIR", "data/gtsrb"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train", description="Train a traffic-sign CNN (GPU when one is visible, else CPU).",
        formatter_class=HelpFormatter,
        epilog="examples:\n  python -m train --data ../shared/data/gtsrb\n"
               "  python -m train --data data/GTSRB --arch notebook-d --epochs 30 --out runs/nbd",
    )
    p.add_argument("--data", type=Path, default=default_data(), help="dataset folder, zip or pickle ($GTSRB_DIR)")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", *FORMATS), help="dataset layout")
    p.add_argument("--arch", default="edge", choices=ARCH_NAMES, help="architecture (edge: int8-friendly default)")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--img-size", type=int, default=None, help="input side in pixels (default: the architecture's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (1-epoch warm-up, cosine decay)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of each class's tracks held out")
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience in epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/ARCH-TIMESTAMP; with --resume the latest run)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    p.add_argument("--backend", default="tensorflow", choices=BACKENDS, help="Keras 3 backend")
    p.add_argument("--background", type=Path, default=None,
                   help="folder of not-a-sign crops (python -m train.negatives) to learn as one extra class")
    p.add_argument("--zoom", type=float, default=AugmentConfig.zoom,
                   help="random zoom 1 +- this (0.2 for a frame pipeline: proposal boxes are looser than GTSRB's)")
    p.add_argument("--shift", type=float, default=AugmentConfig.shift, help="random shift, a fraction of the crop side")
    p.add_argument("--no-augment", action="store_true", help="train on the crops as they are")
    p.add_argument("--no-cache", action="store_true", help="decode the images again instead of using the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@cli_errors("python -m train")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")
    if not (0 <= args.zoom < 1 and 0 <= args.shift < 1):
        parser.error("--zoom and --shift must be between 0 and 1, e.g. --zoom 0.2 --shift 0.1")
    if not 0 < args.val_fraction < 1:
        parser.error("--val-fraction must be between 0 and 1")
    out = args.out or (latest_run(require="checkpoints/state.json") if args.resume else new_run_dir(args.arch))
    cfg = TrainConfig(data=args.data, out=out, arch=args.arch, epochs=args.epochs, img_size=args.img_size,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, val_fraction=args.val_fraction,
                      patience=args.patience, fmt=args.fmt, resume=args.resume, backend=args.backend,
                      device=args.device, augment=not args.no_augment, zoom=args.zoom, shift=args.shift, use_cache=not args.no_cache,
                      progress=not args.quiet, background=args.background)
    result = train(cfg)
    print(f"validation accuracy {result.val_accuracy:.4f} (best epoch {result.best_epoch} of {result.epochs_run}, "
          f"{result.params:,} params, {result.seconds / 60:.1f} min) -> {result.out / 'model.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
