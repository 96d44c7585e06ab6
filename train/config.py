"""A training run's configuration: every setting that changes the model, recorded so a run can be resumed as itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError
from train.augment import AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    out: Path
    arch: str = "edge-xs"  # runs recorded before it was the default trained "edge" (LEGACY_DEFAULTS)
    epochs: int = 30
    img_size: int | None = None  # None: the architecture's default
    batch_size: int = 64
    lr: float = 2e-3  # peak of the warm-up + cosine schedule
    weight_decay: float = 5e-3  # AdamW's decoupled weight decay
    label_smoothing: float = 0.0
    contrast: str = "clahe"  # equalise each crop's lightness before normalising (runtime.preprocess); "none": as it is
    seed: int = 0  # weights and batch order
    split_seed: int | None = None  # which tracks are held out (None: the seed's); fixed across the seeds of a study
    val_fraction: float = 0.1
    devtest_fraction: float = 0.0  # tracks held out from validation too, only to report on (--split dev-test)
    patience: int = 8
    fmt: str = "auto"
    margin: float = 0.1
    backend: str = "tensorflow"
    device: str = "auto"
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None: train on the crops as they are
    use_cache: bool = True
    progress: bool = True
    background: Path | None = None  # folder of "not a sign" crops (python -m train.frames.negatives): one extra class
    init_from: Path | None = None  # --extend: the run whose model this one starts from (its output layer grown)
    add: Path | None = None  # --add: class folders of new classes (or more photos of known ones)
    add_holdout: float = 0.3  # share of each added class's photos (whole tracks where known) kept to score them
    min_per_class: int = 0  # a class with fewer training images is repeated up to this many per epoch
    teacher: Path | None = None  # --teacher: a run whose softened outputs the student learns from too
    distill_temperature: float = 4.0  # softens both distributions; a common choice since Hinton et al. 2015, not tuned here
    distill_weight: float = 0.9  # share of the loss from the teacher, the rest from the labels; likewise not tuned here
    distribute: str = "none"  # "none" | "mirrored" (every device of this machine) | "multiworker" (several processes)
    coordinator: str | None = None  # multiworker: process 0's HOST:PORT
    num_processes: int = 1  # multiworker: how many processes the run has
    process_id: int = 0  # multiworker: which one this is (0 writes the run)
    resume: bool = False
    stall_minutes: float = 20.0  # no finished batch for this long: say so and exit STALL_EXIT (train.watchdog); 0: never


# Settings that define what a run trains: fixed for its life. Resuming takes them from the run.
DEFINING = ("data", "fmt", "arch", "img_size", "margin", "batch_size", "lr", "weight_decay", "label_smoothing", "contrast",
            "seed", "split_seed",
            "val_fraction", "devtest_fraction",
            "augment", "background", "backend", "init_from", "add", "add_holdout", "min_per_class", "distribute",
            "num_processes", "teacher", "distill_temperature", "distill_weight")
# Settings a resumed run may change.
RESUMABLE = ("epochs", "patience", "device", "use_cache", "progress", "stall_minutes", "coordinator", "process_id")


def to_json(cfg: TrainConfig) -> dict[str, Any]:
    """The configuration as JSON-ready values (paths as strings, the augmentation as its ranges)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else dataclasses.asdict(v) if isinstance(v, AugmentConfig) else v
    return out


# The defaults a run recorded before they changed: a run written before a setting existed trained
# with its old default, not today's.
LEGACY_DEFAULTS: dict[str, Any] = {"arch": "edge", "contrast": "none"}


def from_json(data: dict[str, Any], out: Path) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {**LEGACY_DEFAULTS, **{k: v for k, v in data.items() if k in known}}
    paths = {k: Path(values[k]) if values.get(k) else None for k in ("background", "init_from", "add", "teacher")}
    values.update(data=Path(values["data"]), out=Path(out), **paths,
                  augment=AugmentConfig.from_dict(values["augment"]) if values.get("augment") else None)
    return TrainConfig(**values)


FLAGS = {"fmt": "--format", "augment": "--no-augment", "augment.erase_p": "--erase"}


def flag_of(key: str) -> str:
    """The command-line flag of a setting (for messages)."""
    return FLAGS.get(key) or "--" + key.split(".")[-1].replace("_", "-")


def _value(cfg: TrainConfig, key: str) -> Any:
    """A setting by name; "augment.zoom" reads one augmentation range, paths compare resolved."""
    head, _, attr = key.partition(".")
    v = getattr(cfg, head)
    if attr:
        v = getattr(v, attr) if v is not None else None
    return Path(v).resolve() if isinstance(v, Path) else v


def resume_config(recorded: dict[str, Any], out: Path, given: dict[str, Any]) -> TrainConfig:
    """The run's recorded configuration, with the settings in ``given`` that a resumed run may change.

    Args:
        recorded: the configuration the run was started with (its checkpoint's "config").
        given: settings passed explicitly this time, by TrainConfig field name ("augment.zoom" for one range).

    Raises:
        ConfigError: ``given`` changes a setting that defines the model; the message names both values.
    """
    cfg = from_json(recorded, out)
    fresh = dataclasses.replace(cfg, **{k: v for k, v in given.items() if "." not in k and k != "augment"})
    conflicts = []
    for key, value in given.items():
        if key.split(".")[0] in RESUMABLE:
            continue
        was = _value(cfg, key)
        now = Path(value).resolve() if isinstance(value, Path) else value
        if was != now:
            conflicts.append(f"{flag_of(key)} {now} (the run has {was})")
    if conflicts:
        raise ConfigError(f"{out} was trained with other settings: {'; '.join(conflicts)}. Resume it without those "
                          f"flags, or start a new run with another --out")
    return dataclasses.replace(cfg, **{k: getattr(fresh, k) for k in RESUMABLE}, resume=True)


def check_same_run(cfg: TrainConfig, recorded: dict[str, Any], out: Path) -> None:
    """Refuse to continue a checkpoint with a configuration that defines another model."""
    was = from_json(recorded, out)
    diff = [f"{flag_of(k)} {_value(cfg, k)} (the run has {_value(was, k)})" for k in DEFINING if _value(cfg, k) != _value(was, k)]
    if diff:
        raise ConfigError(f"{out} was trained with other settings ({'; '.join(diff)}); resume it with "
                          f"`python -m train --resume --out {out}` alone, or start a new run with another --out")

