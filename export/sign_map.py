"""Export a fitted sign map as an int8 TFLite proposal source, gated against the float map.

    python -m export.sign_map --map runs/quickstart/sign-map

``python -m train.frames.sign_map`` writes MAP/sign_map.keras and MAP/fit.json (the frames it was
fitted on); this writes MAP/sign_map_int8.tflite and its sidecar, which ``runtime.sign_map`` reads.
The map is fully convolutional: it is exported at a frame scale of its own (``--scale``; the sides
it learned at the fit's scale are rescaled at run time) and calibrated on 40 of the fitting frames
at that size. The gate: of the annotated signs the float map's boxes find on the fitting frames
(IoU >= 0.5), the int8 map's boxes must find MIN_KEPT; a map that fails it is not written. The
sidecar names the frames by stem and their gt.txt by checksum (no path of this machine), so
``bench.gtsdb`` leaves them out wherever the map is deployed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.convert import to_tflite
from runtime.annotations import frame_files, read_frame
from runtime.atomic import write_bytes_atomic, write_text_atomic
from runtime.backends import TFLiteBackend
from runtime.builds import sidecar_of
from runtime.cli import HelpFormatter
from runtime.errors import BuildError, ConfigError, cli_errors
from runtime.roi import iou_matrix
from runtime.sign_map import MAP_FILE, MAP_FORMAT, decode, map_input
from train.device import gpu_available, select_backend
from train.frames.sign_map import build_map_model, map_macs

CALIB_FRAMES = 40
# The int8 map must find this share of the signs the float map finds. Light maps that proposed more held-out signs
# kept 0.967-0.972 of their fitting frames' signs; one fitted half as long, 0.934 (docs/decisions.md).
MIN_KEPT = 0.95
MATCH_IOU = 0.5
# By default a map runs at the scale it was fitted at. Fitted at 0.5 and exported at 0.625, the light map's 10 best boxes
# found more of two held-out folds' signs (0.808 / 0.808 against 0.784 / 0.761) for 146 M MACs against 94 M, but a
# pi-profile frame took 13.5 ms against 9.3 on one x86 thread and its boxes found fewer gtsdb signs (0.725 against
# 0.780): docs/decisions.md.


def signs_kept(ref: np.ndarray, out: np.ndarray, signs: np.ndarray, meta: dict[str, Any], sx: float = 1.0,
               sy: float = 1.0) -> tuple[int, int]:
    """Of the annotated ``signs`` (x1, y1, x2, y2, frame pixels) that the float map's boxes find (IoU >= MATCH_IOU), how
    many the int8 map's boxes find too: (kept, found). ``sx``/``sy``: frame pixels per map-input pixel.

    What a map is for is proposing signs: the gate holds the int8 map to the signs, not to the float map's every
    peak (peaks on the background come and go with the int8 output's rounding and cost nothing but a crop)."""
    if not len(signs):
        return 0, 0

    def finds(output: np.ndarray) -> np.ndarray:
        boxes, _ = decode(output, meta["stride"], meta["min_score"], meta["top_k"], sx, sy, meta["size_unit"],
                          meta.get("side_scale", 1.0))
        if not len(boxes):
            return np.zeros(len(signs), bool)
        return iou_matrix(signs, boxes).max(axis=1) >= MATCH_IOU

    found = finds(ref)
    return int((found & finds(out)).sum()), int(found.sum())


def read_fit(folder: Path) -> dict[str, Any]:
    """MAP/fit.json, what ``train.frames.sign_map`` recorded; ConfigError when the folder holds no fitted map."""
    if not (folder / "sign_map.keras").is_file() or not (folder / "fit.json").is_file():
        raise ConfigError(f"--map {folder} holds no fitted sign map (sign_map.keras and fit.json); fit one with "
                          f"`python -m train.frames.sign_map --frames DIR --out {folder}`")
    try:
        fit: dict[str, Any] = json.loads((folder / "fit.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{folder / 'fit.json'} is not readable JSON ({err}); fit the map again") from None
    return fit


def fitting_frames(fit: dict[str, Any], height: int, width: int) -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float]]:
    """The frames the map was fitted on, at its input size (what it is calibrated and gated on), each one's annotated
    signs as an (n, 4) array of frame-pixel boxes, and frame pixels per map-input pixel across and down (one frame
    size: the fit refuses several)."""
    out, signs = [], []
    ratio = (1.0, 1.0)
    for source in fit["sources"]:
        folder = Path(source["path"])
        if not folder.is_dir():
            raise ConfigError(f"the frames {folder} the map was fitted on are gone; the export calibrates on them: restore "
                              f"them or fit the map again")
        files, gt = frame_files(folder)
        for s in source["frames"]:
            if s in files:
                frame = read_frame(files[s])
                out.append(map_input(frame, width, height))
                signs.append(np.array([a.box for a in gt.get(s, [])], np.float64).reshape(-1, 4))
                ratio = (frame.shape[1] / width, frame.shape[0] / height)
    if not out:
        raise ConfigError("none of the frames the map was fitted on is on disk any more; fit the map again")
    return out, signs, ratio


def input_at(fitted: tuple[int, int], fit_scale: float, scale: float) -> tuple[int, int]:
    """The map's input (height, width) at ``scale`` of the frame, given its input at the fit's: multiples of 8, which
    the trunk's strides and concatenations need."""
    height, width = (max(8, round(v * scale / fit_scale / 8) * 8) for v in fitted)
    return height, width


def export_sign_map(folder: Path, *, min_agreement: float = MIN_KEPT, scale: float | None = None) -> Path:
    """Convert MAP/sign_map.keras to int8 with an input of ``scale`` times the frame's size (None: the scale it was
    fitted at), gate it, write MAP/sign_map_int8.tflite and its sidecar; its path.

    Raises:
        ConfigError: no fitted map in ``folder``, or its fitting frames are gone.
        BuildError: the int8 map does not find the signs the float map finds (nothing is written then).
    """
    fit = read_fit(folder)
    select_backend("tensorflow", "auto")
    gpu_available("tensorflow")  # starts TensorFlow without its CUDA notes on a machine without a GPU
    import keras

    scale = fit["scale"] if scale is None else scale
    model = keras.models.load_model(folder / "sign_map.keras", compile=False)
    h, w = input_at((int(model.input_shape[1]), int(model.input_shape[2])), fit["scale"], scale)
    if (h, w) != tuple(model.input_shape[1:3]):
        resized = build_map_model(keras, h, w, fit.get("trunk", "standard"))
        resized.set_weights(model.get_weights())
        model = resized
    smalls, signs, ratio = fitting_frames(fit, h, w)

    def scaled(frames: Sequence[np.ndarray]) -> np.ndarray:  # only the frames used: all of them at once are ~1 GB
        return np.stack(frames).astype(np.float32) / 255.0

    calib = scaled([smalls[i] for i in np.random.default_rng(0).permutation(len(smalls))[:CALIB_FRAMES]])
    data = to_tflite(model, "int8", calib)
    dest = folder / MAP_FILE
    tmp = dest.with_name(dest.name + ".check.tflite")
    tmp.write_bytes(data)
    decoding = {k: fit[k] for k in ("min_score", "top_k", "size_unit")}
    side_scale = fit["scale"] / scale
    gate_decoding = {**decoding, "stride": fit["stride"], "side_scale": side_scale}
    annotated = [i for i, s in enumerate(signs) if len(s)]
    try:
        backend = TFLiteBackend(tmp, threads=1)
        kept = found = 0
        for i in annotated:
            xi = scaled([smalls[i]])
            k, f = signs_kept(model.predict(xi, verbose=0)[0], backend.run(xi)[0], signs[i], gate_decoding, *ratio)
            kept, found = kept + k, found + f
    finally:
        tmp.unlink(missing_ok=True)
    if not found and min_agreement > 0:
        raise BuildError(f"the float sign map finds none of the {sum(len(signs[i]) for i in annotated)} signs of the frames "
                         "it was fitted on; not written. Fit it longer or on more annotated frames")
    agreement = kept / found if found else 1.0
    if agreement < min_agreement:
        raise BuildError(f"the int8 sign map finds {kept} of the {found} signs the float map finds on its fitting frames "
                         f"({agreement:.1%} < {min_agreement:.1%}); not written. Fit it longer or on more frames")
    meta = {"format": MAP_FORMAT, "input": [h, w, 3], "colour": "bgr", "scale": scale, "fit_scale": fit["scale"],
            "stride": fit["stride"], **decoding,
            "fitted_on": [{"gt_sha256": src["gt_sha256"], "frames": src["frames"]} for src in fit["sources"]],
            "steps": fit["steps"], "training_seconds": fit["training_seconds"], "params": int(model.count_params()),
            "macs": map_macs(model), "int8_signs_kept": round(agreement, 4),
            "gate": {"signs_found_by_float": found, "kept_by_int8": kept, "iou": MATCH_IOU, "min_agreement": min_agreement},
            "pasted": fit.get("pasted"), "model_sha256": hashlib.sha256(data).hexdigest()}
    write_bytes_atomic(dest, data)
    write_text_atomic(sidecar_of(dest), json.dumps(meta, indent=2))
    print(f"sign map: {meta['params']:,} params, {len(data) / 1024:.1f} KB int8, finds {kept} of the {found} signs the "
          f"float map finds on its fitting frames -> {dest}")
    return dest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.sign_map", formatter_class=HelpFormatter,
        description="Export a fitted sign map as int8 TFLite, gated against the float map.",
        epilog="examples:\n  python -m export.sign_map --map runs/quickstart/sign-map\n"
               "  python -m export.sign_map --map runs/sign-map --scale 0.625 --min-agreement 0.95",
    )
    p.add_argument("--map", type=Path, required=True, help="the folder python -m train.frames.sign_map --out wrote")
    p.add_argument("--scale", type=float, default=None,
                   help="the frame is resized to this share of its size for the map (default: the scale it was fitted "
                        "at, 0.5; 0.625 finds more small signs and costs the square of the ratio in multiply-accumulates)")
    p.add_argument("--min-agreement", type=float, default=MIN_KEPT,
                   help="share of the fitting frames' signs found by the float map's boxes (IoU >= 0.5) that the "
                        "int8 map's boxes must find too")
    return p


@cli_errors("python -m export.sign_map")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.min_agreement <= 1:
        parser.error(f"--min-agreement must be between 0 and 1, not {args.min_agreement}")
    if args.scale is not None and not 0.1 <= args.scale <= 1:
        parser.error(f"--scale must be between 0.1 and 1 (a share of the frame's size), not {args.scale}")
    export_sign_map(args.map, min_agreement=args.min_agreement, scale=args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
