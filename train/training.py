"""The training loop: numpy batches with augmentation, cosine schedule, per-epoch checkpoints, resume."""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import atomic_path, ensure_writable_dir, folder_lock, write_text_atomic
from runtime.errors import ConfigError
from runtime.preprocess import PreprocessSpec, crop_and_resize, to_model_input
from train.augment import apply, draw
from train.batch_norm import fuse_batch_norm
from train.config import TrainConfig, check_same_run, to_json
from train.data import Split, check_data_path, detect_format
from train.data.formats import FORMATS
from train.device import resolve_device, select_backend
from train.distribute import Cluster, Distribution, distribution, join, share_checkpoint
from train.extend import STRONG, extension_lines, extension_report
from train.plots import plot_history
from train.runs import Run, load_keras_model
from train.splits import SPLIT_FILE, Sets, SplitRecord, SplitRule, assemble, choose
from train.watchdog import StallWatch, exit_stalled, progress_callback


@dataclass
class TrainResult:
    out: Path
    val_accuracy: float
    best_epoch: int
    epochs_run: int
    params: int
    seconds: float
    extension: dict[str, Any] | None = None  # --extend: old classes before/after, new classes' recall
    process: tuple[int, int] = (0, 1)  # (this process, processes): only process 0 writes the run


def split_rule(cfg: TrainConfig) -> SplitRule:
    """The flags that choose a run's held-out images."""
    return SplitRule(cfg.val_fraction, cfg.devtest_fraction, cfg.seed if cfg.split_seed is None else cfg.split_seed,
                     cfg.seed, cfg.add_holdout)


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.data`` and write model.keras, metadata.json, history.json, curves PNG.

    The run folder is locked while training (a second training into it fails at once, naming this
    one). With ``cfg.resume`` it continues the folder's last checkpoint, refusing a configuration that
    defines another model than the one the checkpoint holds.

    Raises:
        ConfigError, DatasetFormatError: bad flags or data, before anything is written.
    """
    select_backend(cfg.backend, cfg.device)
    cluster = None
    if cfg.distribute == "multiworker" and cfg.coordinator:
        cluster = Cluster(cfg.coordinator, cfg.num_processes, cfg.process_id).check()
        join(cluster)  # before anything starts the backend's devices
    device = resolve_device(cfg.backend, cfg.device)  # starts the backend (quietly on a CPU machine)
    dist = distribution(cfg.distribute, cfg.backend, cluster)
    from train.models import ARCHS, build_model  # imports keras: after the backend is chosen

    if cfg.arch not in ARCHS:
        raise ConfigError(f"--arch {cfg.arch} is unknown; choose one of {', '.join(ARCHS)}")
    arch = ARCHS[cfg.arch]
    size = arch.default_size if cfg.img_size is None else cfg.img_size
    if size < arch.min_size:
        raise ConfigError(f"--img-size {size} is too small for --arch {cfg.arch} (minimum {arch.min_size}, default {arch.default_size})")
    if cfg.fmt != "auto" and cfg.fmt not in FORMATS:
        raise ConfigError(f"--format {cfg.fmt} is unknown; choose one of {', '.join(FORMATS)}")
    check_data_path(Path(cfg.data))
    # What the run records: the resolved size, format and paths, so that resuming it needs no flags.
    cfg = replace(cfg, img_size=size, data=Path(cfg.data).resolve(), fmt=cfg.fmt if cfg.fmt != "auto" else detect_format(Path(cfg.data)),
                  background=Path(cfg.background).resolve() if cfg.background else None,
                  teacher=Path(cfg.teacher).resolve() if cfg.teacher else None)
    spec = PreprocessSpec(size=size, colour=arch.colour, normalization=arch.normalization, margin=cfg.margin,
                          contrast=cfg.contrast)
    if cfg.init_from is not None:
        base = Run.open(cfg.init_from)
        if base.preprocess != spec or base.meta["arch"] != cfg.arch:
            raise ConfigError(f"--extend {cfg.init_from} is a {base.meta['arch']} model at {base.preprocess.size} px; extend it "
                              f"with its own architecture and size (leave --arch and --img-size out)")
    if not dist.chief:  # process 0 writes the run; the others write what collective saves make them into a temp folder
        cfg = replace(cfg, out=Path(tempfile.mkdtemp(prefix=f"signkit-process{dist.process_id}-")))
    out = Path(cfg.out)
    if cfg.resume and dist.processes > 1:
        share_checkpoint(dist, out / "checkpoints")
    state = _load_state(out / "checkpoints") if cfg.resume else None
    if state is not None:
        if "config" not in state:
            raise ConfigError(f"{out}: its checkpoint predates recorded settings and cannot be resumed safely; start a new run")
        check_same_run(cfg, state["config"], out)
    record, sets = choose(cfg.data, cfg.fmt, split_rule(cfg), size=size, margin=cfg.margin, background=cfg.background,
                          add=cfg.add, use_cache=cfg.use_cache, progress=cfg.progress)
    teacher = open_teacher(cfg, record, sets.train.class_names, dist) if cfg.teacher is not None else None
    # Only now, with flags and data known to be good, does anything get written.
    ensure_writable_dir(out)
    with folder_lock(out, f"training {cfg.arch}"):
        record.write(out)
        return _fit(cfg, build_model, spec, sets.train, sets.val, _split_info(record, sets), state, device, dist, teacher)


@dataclass
class Teacher:
    """A run the student learns from: its model, and the run's images at the teacher's own input size."""

    run: Run
    model: Any
    train_images: np.ndarray  # the student's training set, in its order, at the teacher's size
    val_probs: np.ndarray  # the teacher's probabilities on the student's validation set

    def record(self, cfg: TrainConfig) -> dict[str, Any]:
        return {"run": str(self.run.path.resolve()), "model_sha256": self.run.model_sha256, "arch": self.run.meta["arch"],
                "size": self.run.preprocess.size, "temperature": cfg.distill_temperature, "weight": cfg.distill_weight}


def open_teacher(cfg: TrainConfig, record: SplitRecord, class_names: tuple[str, ...], dist: Distribution) -> Teacher:
    """``--teacher RUN``, checked: the same classes, the same data, and none of this run's validation or dev-test images
    among what it trained on (else the student's held-out figures would be the teacher's training figures).

    Raises:
        ConfigError: any of those, or --teacher with --distribute.
    """
    if dist.kind != "none":
        raise ConfigError("--teacher trains one process on one device; leave out --distribute")
    assert cfg.teacher is not None
    run = Run.open(cfg.teacher)
    if run.class_names != class_names:
        raise ConfigError(f"--teacher {cfg.teacher} reads {run.num_classes} classes, this run {len(class_names)} (or other ones); "
                          f"distil from a run of the same classes")
    held = leaked_images(run.split_record, record)
    if held:
        raise ConfigError(f"--teacher {cfg.teacher} trained on {held} of this run's validation and dev-test images; train the "
                          f"teacher with the same data, --split-seed, --val-fraction and --devtest-fraction")
    tp = run.preprocess
    tsets = assemble(Path(cfg.out), record, size=tp.size, margin=tp.margin, progress=cfg.progress)
    model = run.load_model()
    val_probs = model.predict(to_model_input(tsets.val.images, tp), batch_size=256, verbose=0)
    return Teacher(run, model, tsets.train.images, val_probs)


def leaked_images(teacher: SplitRecord, student: SplitRecord) -> int:
    """How many of the student's held-out images (validation and dev-test) the teacher trained on; every one, when the
    two split other data."""
    t, s = teacher.dataset, student.dataset
    if Path(t.path).resolve() != Path(s.path).resolve() or t.images != s.images:
        return s.images
    held_t = set(t.devtest) | set(t.val or ())
    held_s = set(s.devtest) | set(s.val or ())
    return len(held_s - held_t)


def _fit(cfg: TrainConfig, build_model: Any, spec: PreprocessSpec, train_set: Split, val_set: Split,
         split_info: dict[str, Any], state: dict[str, Any] | None, device: str, dist: Distribution,
         teacher: Teacher | None = None) -> TrainResult:
    import keras

    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    keras.utils.set_random_seed(cfg.seed)
    if device == "gpu":
        keras.mixed_precision.set_global_policy("mixed_float16")
    if cfg.resume and state is None:
        print(f"note: --resume found no checkpoint in {ckpt_dir}; starting from scratch", file=sys.stderr)
    scaled = dist.record(cfg.batch_size, cfg.lr)  # the global batch and peak learning rate over every replica
    base = None
    with dist.scope():
        if state is not None:
            model = keras.models.load_model(ckpt_dir / "last.keras")
            initial_epoch = state["epoch"]
            print(f"resuming {out} from epoch {initial_epoch}", file=sys.stderr)
        else:
            if cfg.init_from is not None:
                from train.extend import grow_model

                base = Run.open(cfg.init_from)
                model = grow_model(keras, base.load_model(), train_set.num_classes)
            else:
                model = build_model(cfg.arch, spec.size, spec.channels, train_set.num_classes)
            model.compile(optimizer=keras.optimizers.AdamW(scaled["lr"], weight_decay=cfg.weight_decay),
                          loss=_loss(keras, cfg, train_set.num_classes), metrics=[_accuracy(keras, cfg)])
            initial_epoch = 0
            state = {"epoch": 0, "history": {}, "seconds": 0.0, "best": -1.0, "best_epoch": 0}
        fuse_batch_norm(model)
    if initial_epoch >= cfg.epochs:
        raise ConfigError(f"{out} already trained {initial_epoch} epochs; raise --epochs to continue it")
    state["config"] = to_json(cfg)

    batches = _batches(keras, train_set, spec, cfg, initial_epoch, scaled["global_batch"], dist, teacher)
    x_val = to_model_input(val_set.images, spec)
    y_val = val_set.labels if teacher is None else np.concatenate([val_set.labels[:, None], teacher.val_probs], axis=1)
    steps = len(batches)
    callbacks = [
        _cosine_schedule(keras, scaled["lr"], steps, cfg.epochs),
        _checkpointer(keras, ckpt_dir, state),
        # Patience counts only in the schedule's last third, where the learning rate has decayed: a run must
        # not stop while the rate is still high (a frame-pipeline run once stopped at epoch 13 of 30, best epoch 5).
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=cfg.patience,
                                      start_from_epoch=stopping_starts(cfg.epochs)),
    ]
    print(f"training {cfg.arch} ({model.count_params():,} params) on {len(train_set)} images, "
          f"validating on {len(val_set)} ({split_info['kind']} split), {spec.size}x{spec.size}, {device}, backend {cfg.backend}"
          + (f", {dist.kind} over {dist.replicas} replicas (batch {scaled['global_batch']}, lr {scaled['lr']:g})"
             if dist.replicas > 1 or dist.kind != "none" else ""), file=sys.stderr)
    watch = StallWatch(cfg.stall_minutes, exit_stalled(out, cfg.stall_minutes)).start()
    try:
        model.fit(batches, validation_data=dist.validation_data(x_val, y_val, scaled["global_batch"]),
                  epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=[*callbacks, progress_callback(keras, watch)],
                  verbose=(1 if sys.stderr.isatty() else 2) if cfg.progress else 0)
    finally:
        watch.stop()

    state = _load_state(ckpt_dir) or state
    if dist.processes > 1:  # the rest is one process's work: the best model, read back whole on this machine
        keras.distribution.set_distribution(None)
        if not dist.chief:
            shutil.rmtree(out, ignore_errors=True)
            return TrainResult(Path(cfg.out), state["best"], state["best_epoch"], len(state["history"].get("loss", [])),
                               int(model.count_params()), state["seconds"], process=(dist.process_id, dist.processes))
    best = keras.models.load_model(ckpt_dir / "best.keras")
    probs = best.predict(x_val, batch_size=256, verbose=0)
    val_acc = float((probs.argmax(1) == val_set.labels).mean())
    with atomic_path(out / "model.keras") as tmp:
        best.save(tmp)
    epochs_run = len(state["history"].get("loss", []))
    metadata = {
        "format": "signkit-model/1",
        "arch": cfg.arch,
        "class_names": list(train_set.class_names),
        "num_classes": train_set.num_classes,
        "input": {"size": spec.size, "channels": spec.channels, "dtype": "float32", "colour": spec.colour, "layout": "NHWC"},
        "preprocess": spec.to_dict(),
        "dataset": {"path": str(cfg.data), "format": cfg.fmt,
                    "fingerprint": train_set.fingerprint, "train_images": len(train_set), "val_images": len(val_set),
                    "split": split_info},
        "background": _background_info(cfg.background, train_set),
        "val_accuracy": val_acc,
        "best_epoch": state["best_epoch"],
        "epochs_run": epochs_run,
        "early_stopping": {"patience": cfg.patience, "counts_from_epoch": stopping_starts(cfg.epochs) + 1,
                           "stopped_early": epochs_run < cfg.epochs},
        "training_seconds": round(state["seconds"], 1),
        "seconds_per_epoch": round(state["seconds"] / max(epochs_run, 1), 1),
        "params": int(best.count_params()),
        "config": to_json(cfg),
        "distribution": scaled,
        "teacher": teacher.record(cfg) if teacher is not None else None,
        "extension": _extension(cfg, base, best, x_val, val_set),
        "device": device,
        "keras_version": keras.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(out / "metadata.json", json.dumps(metadata, indent=2))
    write_text_atomic(out / "history.json", json.dumps(state["history"], indent=2))
    if metadata["extension"]:
        write_text_atomic(out / "extension.md", f"# {out.name}: extended from {cfg.init_from}\n\n"
                          + "".join(f"- {line}\n" for line in extension_lines(metadata["extension"])))
    plot_history(state["history"], out / "training_curves.png")
    return TrainResult(out, val_acc, state["best_epoch"], epochs_run, int(best.count_params()), state["seconds"],
                       metadata["extension"])


def _split_info(record: SplitRecord, sets: Sets) -> dict[str, Any]:
    """The split as metadata.json summarises it (split.json holds the indices)."""
    def tracks(s: Split) -> int | None:
        return None if s.tracks is None else len(np.unique(s.tracks))

    return {"kind": record.dataset.kind, "file": SPLIT_FILE, "val_tracks": tracks(sets.val),
            "devtest_tracks": tracks(sets.devtest), "devtest_images": len(sets.devtest)}


def _extension(cfg: TrainConfig, base: Any, model: Any, x_val: np.ndarray, val_set: Split) -> dict[str, Any] | None:
    """For --extend: the old classes' accuracy before and after, the new classes' recall on their held-out photos."""
    if cfg.init_from is None:
        return None
    base = base or Run.open(cfg.init_from)
    # A fresh copy from disk: the grown model shares its layers with base.load_model(), trained since.
    before = load_keras_model(base.model_file)
    report = extension_report(before, model, x_val, val_set.labels, base.num_classes, val_set.class_names)
    return {"from": str(cfg.init_from), "added": str(cfg.add) if cfg.add is not None else None,
            "background": str(cfg.background) if cfg.background is not None else None, **report}


def _loss(keras: Any, cfg: TrainConfig, num_classes: int) -> Any:
    """Cross-entropy on integer labels; with label smoothing or a teacher, a registered loss that saves and loads with
    the model."""
    if cfg.teacher is not None:
        from train.models import DistillationLoss  # imports Keras: after the backend is chosen

        return DistillationLoss(num_classes, cfg.distill_temperature, cfg.distill_weight)
    if not cfg.label_smoothing:
        return "sparse_categorical_crossentropy"
    from train.models import SmoothedSparseCrossentropy  # imports Keras: after the backend is chosen

    return SmoothedSparseCrossentropy(num_classes, cfg.label_smoothing)


def _accuracy(keras: Any, cfg: TrainConfig) -> Any:
    """Top-1 accuracy, named "accuracy" whatever the targets hold (a distillation target's label is its column 0)."""
    if cfg.teacher is None:
        return "accuracy"
    from train.models import label_accuracy  # imports Keras: after the backend is chosen

    return keras.metrics.MeanMetricWrapper(label_accuracy, name="accuracy")


def stopping_starts(epochs: int) -> int:
    """The epoch from which early stopping may count patience: the last third of the cosine schedule."""
    return (2 * epochs) // 3


def _background_info(folder: Path | None, train_set: Split) -> dict[str, Any] | None:
    if folder is None:
        return None
    manifest_file = Path(folder) / "negatives.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    fitted = manifest.get("fitted_on")
    if fitted is None and manifest.get("frames"):  # one folder, recorded as its stems and one checksum
        fitted = [{"gt_sha256": manifest.get("gt_sha256"), "frames": manifest["frames"]}]
    return {"path": str(Path(folder).resolve()), "class_id": train_set.num_classes - 1, "fitted_on": fitted or []}


def _batches(keras: Any, data: Split, spec: PreprocessSpec, cfg: TrainConfig, initial_epoch: int, batch_size: int,
             dist: Distribution, teacher: Teacher | None = None) -> Any:
    """Each step's global batch of ``batch_size``: the same in every process (the order and the augmentation depend
    only on seed, epoch and step), of which each process feeds its own share (``Distribution.share``).

    With a ``teacher``, each crop is augmented at the teacher's size, read by the teacher, and resized for the
    student: both see the same augmented crop, and the targets are the label and the teacher's probabilities."""
    aug = cfg.augment
    # Classes with fewer than --min-per-class images are repeated up to it; added photos get the harder augmentation.
    counts = np.bincount(data.labels, minlength=data.num_classes)
    rare = np.flatnonzero((counts > 0) & (counts < cfg.min_per_class))
    extra = [np.resize(np.flatnonzero(data.labels == c), cfg.min_per_class - counts[c]) for c in rare]
    pool = np.concatenate([np.arange(len(data)), *extra]).astype(np.int64)
    strong = np.isin(data.labels, rare) if cfg.add is not None and aug is not None else np.zeros(len(data), bool)
    if dist.processes > 1 and len(pool) < batch_size:
        raise ConfigError(f"{len(pool)} training images do not fill one global batch of {batch_size}; lower --batch-size")

    class Batches(keras.utils.PyDataset):
        """Shuffled, augmented, normalised batches."""

        def __init__(self) -> None:
            super().__init__()
            self.epoch = initial_epoch
            self._order()

        def _order(self) -> None:
            self.idx = pool[np.random.default_rng([cfg.seed, self.epoch]).permutation(len(pool))]

        def __len__(self) -> int:
            # every process must feed as many rows each step: a multi-process run drops the last partial batch
            return len(pool) // batch_size if dist.processes > 1 else math.ceil(len(pool) / batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            sel = self.idx[i * batch_size:(i + 1) * batch_size]
            part = dist.share(len(sel)) if dist.processes > 1 else slice(None)
            mine = sel[part]
            source = data.images if teacher is None else teacher.train_images
            imgs = source[mine]
            if aug is not None:
                rng = np.random.default_rng([cfg.seed, self.epoch, i])
                imgs = apply(imgs, draw(rng, len(sel), imgs.shape[1], aug)[part])
                if strong[sel].any():
                    hard = strong[mine]
                    imgs[hard] = apply(source[mine[hard]], draw(rng, len(sel), imgs.shape[1], STRONG)[part][hard])
            if teacher is None:
                return to_model_input(imgs, spec), data.labels[mine]
            probs = np.asarray(teacher.model.predict_on_batch(to_model_input(imgs, teacher.run.preprocess)))
            small = np.stack([crop_and_resize(im, None, spec) for im in imgs]) if imgs.shape[1] != spec.size else imgs
            return to_model_input(small, spec), np.concatenate([data.labels[mine][:, None], probs], axis=1)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._order()

    return Batches()


def _cosine_schedule(keras: Any, peak: float, steps_per_epoch: int, epochs: int) -> Any:
    """Linear warm-up for one epoch, then cosine decay to zero; computed from the global step so resume works."""
    total = steps_per_epoch * epochs
    warm = steps_per_epoch

    class Cosine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            step = self.epoch * steps_per_epoch + batch
            lr = peak * (step + 1) / warm if step < warm else 0.5 * peak * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            self.model.optimizer.learning_rate.assign(lr)

    return Cosine()


def _load_state(ckpt_dir: Path) -> dict[str, Any] | None:
    f = ckpt_dir / "state.json"
    if f.is_file() and (ckpt_dir / "last.keras").is_file():
        return json.loads(f.read_text())
    return None


def _checkpointer(keras: Any, ckpt_dir: Path, state: dict[str, Any]) -> Any:
    """Every epoch: last.keras (with optimizer state) and state.json; best.keras when val accuracy improves."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            state["seconds"] += time.perf_counter() - self.t0
            for k, v in logs.items():
                if k != "learning_rate":
                    state["history"].setdefault(k, []).append(float(v))
            if logs.get("val_accuracy", -1) > state["best"]:
                state["best"], state["best_epoch"] = float(logs["val_accuracy"]), epoch + 1
                with atomic_path(ckpt_dir / "best.keras") as tmp:
                    self.model.save(tmp)
            with atomic_path(ckpt_dir / "last.keras") as tmp:
                self.model.save(tmp)
            state["epoch"] = epoch + 1
            write_text_atomic(ckpt_dir / "state.json", json.dumps(state))

    return Checkpoint()
