"""Fit a "sign here" map on annotated frames and export it as an int8 TFLite proposal source.

    python -m train.frames.sign_map --frames data/GTSDB/gtsdb-train --out runs/sign-map

A tiny fully-convolutional net over the frame shrunk to ``--scale`` (half size by default; runtime.sign_map runs it): a stride-4 trunk,
a stride-8 context branch with dilated convolutions, and two 1x1 heads at stride 4, a sigmoid heat
map of sign centres (focal loss against a Gaussian at each annotated centre, sigma a quarter of the
sign) and log2 of the sign's side in frame pixels at the centres (L1; divided by 8, so that both
channels share one int8 output scale). Trained on random crops of the frames (most of them around
a sign), zoomed, mirrored, with brightness and contrast jitter; with ``--paste``, signs of a sign
dataset (GTSRB) are pasted into sign-free places of the crops too, and marked in the targets.

Writes OUT/sign_map.keras and OUT/fit.json (the scale, stride, score threshold and the frames it was
fitted on, so ``bench.gtsdb`` will not score it on them); ``python -m export.sign_map`` writes its int8
build after a gate: on the fitting frames, the int8 map's boxes must find the signs the float map's boxes find.
While it runs, OUT/checkpoint/ holds its weights, optimizer and random state every CHECKPOINT_EVERY steps:
``--resume`` continues an interrupted fit from there, to the weights an uninterrupted fit reaches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.annotations import Annotation, annotations_fingerprint, frame_files, read_frame, select_frames
from runtime.atomic import atomic_path, ensure_writable_dir, write_text_atomic
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.sign_map import map_input
from train.device import gpu_available, select_backend
from train.frames.map_crops import FLIP, PASTE_SAMPLING, SCALE, SIZE_UNIT, STRIDE, ZOOM, crop_batches, load_paste_pool

SCALES = (0.25, 1.0)  # --scale's range: a quarter-size frame leaves GTSDB's smallest signs 4 pixels wide
MIN_SCORE = 0.05
FIT_FORMAT = "signkit-signmap-fit/1"
STEPS = 5000  # 2500 proposed 3 fewer of 187 held-out signs
TOP_K = 15  # boxes a frame at most: 20 proposed no more held-out signs
CHECKPOINT_EVERY = 1000  # steps between checkpoints: at most about 3 minutes of a light map's fit lost (6.7 steps/s, 2 x86 cores)
CHECKPOINT_FORMAT = "signkit-signmap-checkpoint/1"


TRUNKS = ("standard", "light")


def build_map_model(keras: Any, height: int | None = None, width: int | None = None, trunk: str = "standard") -> Any:
    """The map: a stride-4 trunk, a stride-8 context branch with dilated convolutions, heads at stride 4.

    ``light``: the same layout with depthwise-separable blocks past the first convolution and a 1x1 fusion, about a
    fifth of the multiply-accumulates (a Raspberry Pi's budget; what it finds is measured, not assumed)."""
    from keras import layers

    def block(x: Any, filters: int, stride: int = 1, dilation: int = 1) -> Any:
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", dilation_rate=dilation, use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))  # settles within ~50 steps (0.99: ~500)

    def separable(x: Any, filters: int, stride: int = 1, dilation: int = 1) -> Any:
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", dilation_rate=dilation, use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))

    if trunk not in TRUNKS:
        raise ConfigError(f"--trunk {trunk} is unknown; choose one of {', '.join(TRUNKS)}")
    inner = separable if trunk == "light" else block
    inp = keras.Input((height, width, 3), name="frame")
    x = inner(block(inp, 12, 2), 16, 2)
    s4 = inner(x, 24)
    x = inner(s4, 32, 2)
    for d in (1, 2, 4):
        x = inner(x, 32, dilation=d)
    x = layers.Concatenate()([layers.UpSampling2D(2)(x), s4])
    if trunk == "light":
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(layers.Conv2D(24, 1, use_bias=False)(x)))
        x = separable(x, 24)
    else:
        x = block(x, 24)
    heat = layers.Conv2D(1, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(-4.0), name="heat")(x)
    size = layers.Conv2D(1, 1, name="size")(x)
    return keras.Model(inp, layers.Concatenate(name="map")([heat, size]), name="sign_map")


def map_loss(y: Any, p: Any) -> Any:
    from keras import ops

    heat, size, mask = y[..., 0], y[..., 1], y[..., 2]
    ph = ops.clip(p[..., 0], 1e-4, 1 - 1e-4)
    pos = ops.cast(heat >= 0.999, "float32")
    focal = -(pos * (1 - ph) ** 2 * ops.log(ph) + (1 - pos) * (1 - heat) ** 4 * ph**2 * ops.log(1 - ph))
    n = ops.maximum(ops.sum(pos), 1.0)
    return ops.sum(focal) / n + 0.5 * SIZE_UNIT * ops.sum(mask * ops.abs(p[..., 1] - size)) / n


def read_frame_sets(folders: Sequence[Path], subset: str) -> tuple[list[np.ndarray], list[list[Annotation]], list[dict[str, Any]]]:
    """The chosen frames of every folder with their signs, and what the fit records of each folder (its path, the
    checksum of its gt.txt, the stems used)."""
    frames: list[np.ndarray] = []
    signs: list[list[Annotation]] = []
    sources = []
    for folder in folders:
        files, gt = frame_files(folder)
        stems = select_frames(list(files), subset)
        frames += [read_frame(files[s], gt.get(s, ())) for s in stems]
        signs += [gt.get(s, []) for s in stems]
        sources.append({"path": str(Path(folder).resolve()), "gt_sha256": annotations_fingerprint(folder), "frames": stems})
    if not any(signs):
        raise ConfigError(f"{', '.join(map(str, folders))} have no annotated frames in --subset {subset}; the map learns "
                          f"from annotated signs")
    return frames, signs, sources


def fit_sign_map(frames_dirs: Sequence[Path], out: Path, *, subset: str = "all", steps: int = STEPS, batch: int = 16,
                 crop: int = 256, seed: int = 0, paste: Path | None = None, paste_rate: float = 1.0,
                 paste_images: int = 8000, paste_sampling: str = "images", progress: bool = True,
                 trunk: str = "standard", zoom: float = ZOOM, flip: bool = FLIP, scale: float = SCALE,
                 resume: bool = False) -> Path:
    """Fit the map on the chosen frames of ``frames_dirs``; write OUT/sign_map.keras and OUT/fit.json (what
    ``python -m export.sign_map`` turns into the int8 build); the folder.

    ``paste``: a sign dataset (any layout ``train.data`` reads) whose crops are pasted into the training crops,
    ``paste_rate`` signs a crop on average (Poisson), drawn from ``paste_images`` of its images, picked by
    ``paste_sampling`` (``map_crops.pool_indices``); ``zoom`` and ``flip`` as ``map_crops.crops`` says. ``scale``: the frame's
    size the map sees (its input: :func:`map_size`); the frames shrink as the runtime shrinks them. ``resume``:
    continue OUT/checkpoint/ (a fit of the same settings cut short), or do nothing if OUT holds that fit finished.

    Raises:
        ConfigError: no annotated frames, frames of different sizes, or frames smaller than a training crop; OUT holds an
            unfinished fit and ``resume`` is not given, or ``resume`` and OUT's fit has other settings.
    """
    if paste is not None and not paste_rate > 0:
        raise ConfigError(f"a paste rate of {paste_rate} pastes nothing from {paste}; give a rate above 0, or no sign dataset")
    frames, signs, sources = read_frame_sets(frames_dirs, subset)
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        raise ConfigError(f"{', '.join(map(str, frames_dirs))}: frames of {len(sizes)} different sizes; the map is fitted at "
                          f"one frame size")
    h, w = map_size(frames[0].shape[:2], scale)
    if min(h, w) < crop:
        raise ConfigError(f"frames of {frames[0].shape[1]}x{frames[0].shape[0]} are too small for the map's {crop}-pixel "
                          f"training crops at --scale {scale}; give a larger scale or larger frames")
    smalls = [map_input(f, w, h) for f in frames]
    del frames
    ensure_writable_dir(out)
    ckpt = out / "checkpoint"
    if not resume and (ckpt / "state.json").is_file():
        raise ConfigError(f"{out} holds an unfinished fit ({ckpt}); continue it with --resume, or give another --out")
    pool, pasted = None, None
    if paste is not None:
        pool, pasted = load_paste_pool(paste, paste_images, seed, progress=progress, sampling=paste_sampling)
        pasted["rate"] = paste_rate
    settings = {"sources": [{k: v for k, v in src.items() if k != "path"} for src in sources], "steps": steps, "batch": batch,
                "crop": crop, "seed": seed, "paste": pasted and {k: v for k, v in pasted.items() if k not in ("source", "fingerprint")},
                "paste_images": paste_images if paste is not None else None, "trunk": trunk, "zoom": zoom, "flip": flip,
                "scale": scale}
    state = _read_checkpoint(ckpt, settings, out) if resume else None
    if resume and state is None:
        if _finished(out, settings):
            print(f"sign map: {out} already holds this fit finished; nothing to do", file=sys.stderr)
            return out
        print(f"note: --resume found no checkpoint in {ckpt}; starting from scratch", file=sys.stderr)

    select_backend("tensorflow", "auto")
    gpu_available("tensorflow")  # starts TensorFlow without its CUDA notes on a machine without a GPU
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    start, before = 0, 0.0
    if state is None:
        model = build_map_model(keras, trunk=trunk)
        model.compile(keras.optimizers.AdamW(2e-3, weight_decay=1e-4), loss=map_loss)
    else:
        model = keras.saving.load_model(ckpt / state["model"], custom_objects={"map_loss": map_loss})
        rng.bit_generator.state = state["rng"]
        start, before = int(state["step"]), float(state["seconds"])
        if start >= int(steps * 0.7):
            model.optimizer.learning_rate.assign(5e-4)
        print(f"sign map: resuming {out} at step {start + 1}/{steps}", file=sys.stderr, flush=True)
    t0 = time.time() - before
    paced: tuple[int, float] | None = None  # this run's first step done, and when: the pace is timed from it (the first traces the graph)
    every = max(1, min(250, steps // 20))  # a line every 5 % of the fit (at most every 250 steps), --quiet or not
    save_every = max(1, min(CHECKPOINT_EVERY, steps // 10))
    # drawn on a thread ahead of the step; closed on any way out, so the thread ends with the fit
    with contextlib.closing(crop_batches(rng, steps - start, smalls, signs, crop, batch, pool, paste_rate, zoom, flip,
                                         scale)) as batches:
        for step, (x, y, drawn) in enumerate(batches, start=start):
            if step == int(steps * 0.7):
                model.optimizer.learning_rate.assign(5e-4)
            loss = float(model.train_on_batch(x, y))
            if step % every == 0 or step == steps - 1:
                now, eta = time.time(), ""
                if paced is not None and step + 1 > paced[0]:
                    eta = f", about {(steps - step - 1) * (now - paced[1]) / (step + 1 - paced[0]) / 60:.0f} min left"
                print(f"sign map: step {step + 1}/{steps}, loss {loss:.3f} ({now - t0:.0f} s{eta})", file=sys.stderr, flush=True)
            if paced is None:
                paced = (step + 1, time.time())
            if (step + 1) % save_every == 0 and step + 1 < steps:
                _write_checkpoint(ckpt, model, step + 1, drawn, settings, time.time() - t0)
    fixed = build_map_model(keras, h, w, trunk)
    fixed.set_weights(model.get_weights())
    with atomic_path(out / "sign_map.keras") as tmp:
        fixed.save(tmp)
    fit: dict[str, Any] = {"format": FIT_FORMAT, "sources": sources, "scale": scale, "stride": STRIDE, "min_score": MIN_SCORE,
           "top_k": TOP_K, "size_unit": SIZE_UNIT, "trunk": trunk, "steps": steps, "seed": seed, "training_seconds": round(time.time() - t0, 1),
           "params": int(fixed.count_params()), "macs": map_macs(fixed), "pasted": pasted,
           "augment": {"zoom": zoom, "flip": flip}, "settings": settings}
    write_text_atomic(out / "fit.json", json.dumps(fit, indent=2))
    shutil.rmtree(ckpt, ignore_errors=True)
    print(f"sign map fitted on {sum(len(s['frames']) for s in sources)} frames ({fit['params']:,} params, "
          f"{fit['macs'] / 1e6:.0f} M MACs a frame) -> {out}; export it with `python -m export.sign_map --map {out}`")
    return out


def _write_checkpoint(folder: Path, model: Any, step: int, rng_state: dict[str, Any], settings: dict[str, Any],
                      seconds: float) -> None:
    """The fit so far: the model with its optimizer as map-STEP.keras, then state.json naming it (the step, the crops'
    random state after the step's batch, the settings it belongs to), then the older model file removed, so a fit
    killed at any point leaves a checkpoint that is whole."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"map-{step}.keras"
    with atomic_path(folder / name) as tmp:
        model.save(tmp)
    write_text_atomic(folder / "state.json", json.dumps({"format": CHECKPOINT_FORMAT, "step": step, "model": name,
                                                        "seconds": round(seconds, 1), "rng": rng_state,
                                                        "settings": settings}))
    for old in folder.glob("map-*.keras"):
        if old.name != name:
            old.unlink()


def _differences(recorded: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """What ``settings`` change of the ``recorded`` ones, a phrase each (the frames by name only)."""
    return [k if k == "sources" else f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in settings.items() if recorded.get(k) != v]


def _read_checkpoint(folder: Path, settings: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` (None: there is none), refused unless it belongs to a fit of ``settings``."""
    path = folder / "state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        ok = state.get("format") == CHECKPOINT_FORMAT and (folder / state["model"]).is_file()
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(f"{path} is not a whole checkpoint of this version's fit; remove {folder} to start over")
    diff = _differences(state["settings"], settings)
    if diff:
        raise ConfigError(f"{out} was being fitted with other settings ({'; '.join(diff)}); resume it with the same "
                          f"arguments, or give another --out")
    return state


def _finished(out: Path, settings: dict[str, Any]) -> bool:
    """Whether OUT holds a finished fit of ``settings``."""
    try:
        recorded = json.loads((out / "fit.json").read_text()).get("settings")
    except (OSError, ValueError):
        return False
    return recorded is not None and (out / "sign_map.keras").is_file() and not _differences(recorded, settings)


def map_size(frame_hw: tuple[int, ...], scale: float) -> tuple[int, int]:
    """The map's input (height, width) for frames of ``frame_hw`` at ``scale``: multiples of 8, which the trunk's
    stride-8 branch and its concatenation need (680x400 of 1360x800 at 0.5, 840x496 at 0.62)."""
    height, width = (max(8, int(v * scale) // (2 * STRIDE) * 2 * STRIDE) for v in frame_hw[:2])
    return height, width


def map_macs(model: Any) -> int:
    """Multiply-accumulates of one frame through the map (its convolutions)."""
    from train.models import count_macs  # imports Keras, which the fit has loaded by then

    return count_macs(model)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.frames.sign_map", formatter_class=HelpFormatter,
        description="Fit a 'sign here' map (a learned proposal source) on annotated frames.\n\n"
                    "Writes OUT/sign_map.keras and OUT/fit.json; `python -m export.sign_map --map OUT` makes the int8 build.",
        epilog="examples:\n  python -m train.frames.sign_map --frames data/GTSDB/train --out runs/sign-map\n"
               "  python -m train.frames.sign_map --frames data/GTSDB/train --paste data/GTSRB --steps 500 --out runs/sign-map",
    )
    p.add_argument("--frames", type=Path, nargs="+", required=True,
                   help="folders of frames + gt.txt (image;left;top;right;bottom;ClassId)")
    p.add_argument("--subset", default="all", choices=("all", "even", "odd"), help="fit on these frames of each folder (by number)")
    p.add_argument("--out", type=Path, required=True, help="folder for sign_map.keras and fit.json")
    p.add_argument("--steps", type=int, default=STEPS, help="training batches of 16 crops (the fit prints its pace as it goes)")
    p.add_argument("--seed", type=int, default=0, help="weights, crops and pasted signs")
    p.add_argument("--paste", type=Path, metavar="SIGNS",
                   help="a sign dataset (e.g. GTSRB, any layout python -m train reads) whose signs are pasted into "
                        "sign-free places of the training crops: more positives, of every class")
    p.add_argument("--paste-rate", type=float, default=1.0, help="signs pasted into a crop on average, with --paste")
    p.add_argument("--paste-sampling", choices=PASTE_SAMPLING,
                   help="with --paste: draw the pasted signs' pool from all images (classes as common as in the "
                        "dataset; the default) or evenly from every class (rare ones, e.g. white end-of-limit "
                        "signs, as often as common)")
    p.add_argument("--trunk", default="standard", choices=TRUNKS,
                   help="light: depthwise-separable blocks, about a fifth of the multiply-accumulates a frame")
    p.add_argument("--zoom", type=float, default=ZOOM,
                   help="training crops cut at 1 - ZOOM to 1 / (1 - ZOOM) of the frame's scale, log-uniform (signs of other "
                        "sizes; 0: the frame's scale only)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=FLIP,
                   help="mirror half of the training crops left to right")
    p.add_argument("--scale", type=float, default=SCALE,
                   help="the frame's size the map sees, as a fraction: 0.5 is 680x400 of a 1360x800 frame; larger finds "
                        "more small signs and fewer large ones, for MACs growing with its square (docs/decisions.md; "
                        "python -m export.sign_map can export it at another scale too)")
    p.add_argument("--resume", action="store_true",
                   help="continue the fit cut short in OUT (OUT/checkpoint/, written every 1000 steps, a tenth of a shorter "
                        "fit) with the same arguments; an OUT that holds this fit finished is left as it is")
    p.add_argument("--quiet", action="store_true", help="no progress bar while the pasted signs load (the fit still prints a "
                   "line every 5 %% of its steps)")
    return p


@cli_errors("python -m train.frames.sign_map")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if not 0 < args.paste_rate <= 8:
        parser.error("--paste-rate must be above 0 and at most 8 (to paste nothing, leave out --paste)")
    if not 0 <= args.zoom < 0.5:
        parser.error("--zoom must be at least 0 and below 0.5 (0: the frame's scale only)")
    if not SCALES[0] <= args.scale <= SCALES[1]:
        parser.error(f"--scale must be between {SCALES[0]} and {SCALES[1]} (a fraction of the frame's size, 0.5: half)")
    if args.paste_sampling is not None and args.paste is None:
        parser.error("--paste-sampling chooses which signs --paste pastes; give --paste SIGNS too, or leave it out")
    fit_sign_map(args.frames, args.out, subset=args.subset, steps=args.steps, seed=args.seed, paste=args.paste,
                 paste_rate=args.paste_rate, paste_sampling=args.paste_sampling or "images", progress=not args.quiet,
                 trunk=args.trunk, zoom=args.zoom, flip=args.flip, scale=args.scale, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
