"""Where training runs live, and which one is the latest (export's default model)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from typing import Any

from runtime.errors import ConfigError


def runs_dir() -> Path:
    return Path(os.environ.get("SIGNKIT_RUNS", "runs"))


def new_run_dir(arch: str) -> Path:
    return runs_dir() / f"{arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_run(root: Path | None = None, require: str = "model.keras") -> Path:
    """The most recently written run under ``root`` holding ``require``."""
    root = root or runs_dir()
    runs = [p.parent for p in root.glob(f"*/{require}")] if root.is_dir() else []
    if not runs:
        raise ConfigError(f"no trained model found under {root}/; train one with `python -m train` or pass --model DIR")
    return max(runs, key=lambda p: (p / require).stat().st_mtime)


def load_keras_model(path: Path) -> Any:
    """``keras.models.load_model`` with a one-line error for a file that is not a Keras model."""
    import keras

    try:
        return keras.models.load_model(path)
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is not a loadable Keras model ({str(err).splitlines()[0][:100]}); "
                          f"retrain it with `python -m train` or pass --model another run") from None
