"""Export a fitted sign map as an int8 TFLite proposal source, gated against the float map.

    python -m export.sign_map --map runs/quickstart/sign-map

``python -m train.frames.sign_map`` writes MAP/sign_map.keras and MAP/fit.json (the frames it was
fitted on); this writes MAP/sign_map_int8.tflite and its sidecar, which ``runtime.sign_map`` reads.
The map is fully convolutional: it is exported at a frame scale of its own (``--scale``; the sides
it learned at the fit's scale are rescaled at run time) and calibrated on 40 of the fitting frames
at that size. The gate: of the annotated signs the float map's boxes find on the fitting frames
(IoU >= 0.5), the int8 map's boxes must find MIN_KEPT; a map that fails it is not written. Where
the fitting frames hold enough small signs, the same map is also exported at ``--band-scale`` over
the band of the frame they were in (MAP/sign_map_band_int8.tflite, gated the same way, named in the
map's sidecar): a second look at the far signs for a fraction of the cost of a larger map. The
sidecar names the frames by stem and their gt.txt by checksum (no path of this machine), so
``bench.gtsdb`` leaves them out wherever the map is deployed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
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
from runtime.sign_map import BAND_FILE, MAP_FILE, MAP_FORMAT, decode, map_input, region_pixels, side_reading
from train.device import gpu_available, select_backend
from train.frames.sign_map import SCALES, build_map_model, map_macs, map_size

CALIB_FRAMES = 40
# The int8 map must find this share of the signs the float map finds. Light maps that proposed more held-out signs
# kept 0.967-0.972 of their fitting frames' signs; one fitted half as long, 0.934 (docs/decisions.md).
MIN_KEPT = 0.95
MATCH_IOU = 0.5
# The band: the same map, larger, over where the fitting frames' small signs (longer side under BAND_SIDE pixels,
# GTSDB's "small") were: the 2nd-98th percentiles of their centres grown by BAND_MARGIN hold 97 % / 95 % of them in two
# folds' fitting frames, in 23-24 % of a 1360x800 frame. Fitted at 0.5, the band at 0.75 (BAND times that, 47-52 M
# MACs) and the map at 0.5 (94 M): the pi profile's 5 + 5 boxes found 0.860 / 0.827 of two held-out folds' signs against
# 0.784 / 0.761 for the map's 10; the map at 0.4 and the band at 0.625, 0.818 / 0.785 (docs/decisions.md).
BAND_SIDE = 32
BAND_PERCENTILES = (2, 98)
BAND_MARGIN = 48  # frame pixels: a small sign's own side and some
BAND_MIN_SIGNS = 20
BAND = 1.5
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


def fitting_files(fit: dict[str, Any]) -> list[tuple[Path, np.ndarray]]:
    """The frames the map was fitted on that are still on disk, each with its annotated signs as an (n, 4) array of
    frame-pixel boxes (what the map is calibrated and gated on)."""
    out = []
    for source in fit["sources"]:
        folder = Path(source["path"])
        if not folder.is_dir():
            raise ConfigError(f"the frames {folder} the map was fitted on are gone; the export calibrates on them: restore "
                              f"them or fit the map again")
        files, gt = frame_files(folder)
        out += [(files[s], np.array([a.box for a in gt.get(s, [])], np.float64).reshape(-1, 4))
                for s in source["frames"] if s in files]
    if not out:
        raise ConfigError("none of the frames the map was fitted on is on disk any more; fit the map again")
    return out


def fit_band(signs: Sequence[np.ndarray], frame_hw: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """The band of the frame (x1, y1, x2, y2 as fractions of it) where the small signs of ``signs`` (frame-pixel boxes)
    are: the BAND_PERCENTILES of their centres across and down, grown by BAND_MARGIN pixels. None with fewer than
    BAND_MIN_SIGNS small signs (too few to say where they are)."""
    boxes = np.concatenate([np.reshape(b, (-1, 4)) for b in signs]) if len(signs) else np.zeros((0, 4))
    small = boxes[np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) < BAND_SIDE]
    if len(small) < BAND_MIN_SIGNS:
        return None
    h, w = frame_hw
    cx, cy = (small[:, 0] + small[:, 2]) / 2, (small[:, 1] + small[:, 3]) / 2
    (x1, x2), (y1, y2) = np.percentile(cx, BAND_PERCENTILES), np.percentile(cy, BAND_PERCENTILES)
    x1, y1 = max(0.0, x1 - BAND_MARGIN), max(0.0, y1 - BAND_MARGIN)
    x2, y2 = min(float(w), x2 + BAND_MARGIN), min(float(h), y2 + BAND_MARGIN)
    return round(x1 / w, 4), round(y1 / h, 4), round(x2 / w, 4), round(y2 / h, 4)


def _gated_int8(model: Any, views: list[np.ndarray], signs: list[np.ndarray], ratio: tuple[float, float],
                decoding: dict[str, Any], what: str, min_agreement: float, hint: str) -> tuple[bytes, int, int]:
    """``model`` converted to int8, calibrated on CALIB_FRAMES of ``views`` (its inputs as uint8), and gated: of the
    ``signs`` (in the views' frame pixels, ``ratio`` of them to an input pixel) its float boxes find, the int8 boxes
    must find ``min_agreement``. (int8 bytes, kept, found); BuildError naming ``what`` when the gate fails."""

    def scaled(frames: Sequence[np.ndarray]) -> np.ndarray:  # only the frames used: all of them at once are ~1 GB
        return np.stack(frames).astype(np.float32) / 255.0

    calib = scaled([views[i] for i in np.random.default_rng(0).permutation(len(views))[:CALIB_FRAMES]])
    data = to_tflite(model, "int8", calib)
    with tempfile.TemporaryDirectory(prefix="signkit-map-") as tmp:
        check = Path(tmp) / "check.tflite"
        check.write_bytes(data)
        backend = TFLiteBackend(check, threads=1)
        kept = found = 0
        for view, boxes in zip(views, signs):
            if len(boxes):
                xi = scaled([view])
                k, f = signs_kept(model.predict(xi, verbose=0)[0], backend.run(xi)[0], boxes, decoding, *ratio)
                kept, found = kept + k, found + f
    if not found and min_agreement > 0:
        raise BuildError(f"the float {what} finds none of the {sum(len(b) for b in signs)} signs of the frames it was "
                         f"fitted on; not written. {hint}")
    if found and kept / found < min_agreement:
        raise BuildError(f"the int8 {what} finds {kept} of the {found} signs the float map finds on its fitting frames "
                         f"({kept / found:.1%} < {min_agreement:.1%}); not written. {hint}")
    return data, kept, found


def _at_size(keras: Any, model: Any, height: int, width: int, trunk: str) -> Any:
    """The fully convolutional map with an input of ``height`` x ``width`` (the same weights)."""
    if (height, width) == tuple(model.input_shape[1:3]):
        return model
    resized = build_map_model(keras, height, width, trunk)
    resized.set_weights(model.get_weights())
    return resized


def export_sign_map(folder: Path, *, min_agreement: float = MIN_KEPT, scale: float | None = None,
                    band_scale: float | None = None) -> Path:
    """Convert MAP/sign_map.keras to int8 with an input of ``scale`` times the frame's size, and the same map at
    ``band_scale`` over the small signs' band (``fit_band``; 0: none), gate both, write MAP/sign_map_int8.tflite (and
    MAP/sign_map_band_int8.tflite) with their sidecars; the map's path.

    By default (None) the map runs at the scale it was fitted at and the band at BAND times it.

    Raises:
        ConfigError: no fitted map in ``folder``, or its fitting frames are gone.
        BuildError: the int8 map (or band) does not find the signs the float one finds (nothing is written then).
    """
    fit = read_fit(folder)
    select_backend("tensorflow", "auto")
    gpu_available("tensorflow")  # starts TensorFlow without its CUDA notes on a machine without a GPU
    import keras

    trunk = fit.get("trunk", "standard")
    fitted = keras.models.load_model(folder / "sign_map.keras", compile=False)
    files = fitting_files(fit)
    frame_hw = read_frame(files[0][0]).shape[:2]  # the fit refuses frames of several sizes
    signs = [boxes for _, boxes in files]
    scale = fit["scale"] if scale is None else scale
    band_scale = round(fit["scale"] * BAND, 4) if band_scale is None else band_scale
    region = fit_band(signs, frame_hw) if band_scale else None
    if band_scale and region is None:
        print(f"sign map: no band (fewer than {BAND_MIN_SIGNS} signs under {BAND_SIDE} px in its fitting frames)")
    h, w = map_size(frame_hw, scale)
    model = _at_size(keras, fitted, h, w, trunk)
    decoding = {k: fit[k] for k in ("min_score", "top_k", "size_unit")}
    gate = {**decoding, "stride": fit["stride"], "side_scale": side_reading(fit["scale"], scale)}  # as the runtime reads it
    if region is not None:
        x1, y1, x2, y2 = region_pixels(region, *frame_hw)
        bh, bw = map_size((y2 - y1, x2 - x1), band_scale)
    views, band_views = [], []
    for f, _ in files:  # each frame decoded once, for the map and its band
        frame = read_frame(f)
        views.append(map_input(frame, w, h))
        if region is not None:
            band_views.append(map_input(frame[y1:y2, x1:x2], bw, bh))
    data, kept, found = _gated_int8(model, views, signs, (frame_hw[1] / w, frame_hw[0] / h), gate, "sign map",
                                    min_agreement, "Fit it longer or on more annotated frames")
    band: dict[str, Any] | None = None
    band_data = b""
    if region is not None:
        band_model = _at_size(keras, fitted, bh, bw, trunk)
        inside = [b[(b[:, 0] >= x1) & (b[:, 1] >= y1) & (b[:, 2] <= x2) & (b[:, 3] <= y2)] - (x1, y1, x1, y1) for b in signs]
        band_data, band_kept, band_found = _gated_int8(
            band_model, band_views, inside,
            ((x2 - x1) / bw, (y2 - y1) / bh), {**gate, "side_scale": side_reading(fit["scale"], band_scale)}, "sign map's band",
            min_agreement, "Fit the map longer, or export it without its band (--band-scale 0)")
        band = {"input": [bh, bw, 3], "scale": band_scale, "region": list(region), "macs": map_macs(band_model),
                "int8_signs_kept": round(band_kept / band_found, 4) if band_found else 1.0,
                "gate": {"signs_found_by_float": band_found, "kept_by_int8": band_kept}}
    common = {"format": MAP_FORMAT, "colour": "bgr", "fit_scale": fit["scale"], "stride": fit["stride"], **decoding,
              "fitted_on": [{"gt_sha256": src["gt_sha256"], "frames": src["frames"]} for src in fit["sources"]],
              "steps": fit["steps"], "training_seconds": fit["training_seconds"], "params": int(model.count_params()),
              "pasted": {k: v for k, v in fit["pasted"].items() if k != "source"} if fit.get("pasted") else None}  # no machine path
    meta = {**common, "input": [h, w, 3], "scale": scale, "macs": map_macs(model),
            "int8_signs_kept": round(kept / found, 4) if found else 1.0,
            "gate": {"signs_found_by_float": found, "kept_by_int8": kept, "iou": MATCH_IOU, "min_agreement": min_agreement},
            "model_sha256": hashlib.sha256(data).hexdigest()}
    dest, band_dest = folder / MAP_FILE, folder / BAND_FILE
    if band is not None:
        band_meta = {**common, **band, "model_sha256": hashlib.sha256(band_data).hexdigest()}
        write_bytes_atomic(band_dest, band_data)
        write_text_atomic(sidecar_of(band_dest), json.dumps(band_meta, indent=2))
        meta["band"] = {"file": BAND_FILE, "sha256": band_meta["model_sha256"]}
    else:  # a band left from an earlier export is not this map's
        band_dest.unlink(missing_ok=True)
        sidecar_of(band_dest).unlink(missing_ok=True)
    write_bytes_atomic(dest, data)
    write_text_atomic(sidecar_of(dest), json.dumps(meta, indent=2))
    print(f"sign map: {meta['params']:,} params, {len(data) / 1024:.1f} KB int8, finds {kept} of the {found} signs the "
          f"float map finds on its fitting frames -> {dest}")
    if band is not None:
        print(f"its band: columns {x1}-{x2}, rows {y1}-{y2} of {frame_hw[1]}x{frame_hw[0]} frames at {band_scale}, "
              f"{band['macs'] / 1e6:.0f} M MACs; finds {band_kept} of the {band_found} signs the float band finds -> "
              f"{band_dest}")
    return dest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.sign_map", formatter_class=HelpFormatter,
        description="Export a fitted sign map as int8 TFLite, gated against the float map.",
        epilog="examples:\n  python -m export.sign_map --map runs/quickstart/sign-map\n"
               "  python -m export.sign_map --map runs/sign-map --scale 0.4 --band-scale 0.625\n"
               "  python -m export.sign_map --map runs/sign-map --band-scale 0 --min-agreement 0.95",
    )
    p.add_argument("--map", type=Path, required=True, help="the folder python -m train.frames.sign_map --out wrote")
    p.add_argument("--scale", type=float, default=None,
                   help="the frame is resized to this share of its size for the map (default: the scale it was fitted "
                        "at, 0.5; 0.625 finds more small signs and costs the square of the ratio in multiply-accumulates)")
    p.add_argument("--band-scale", type=float, default=None,
                   help="the scale the map runs at over the band of the frame where its fitting frames' small signs "
                        f"were (under {BAND_SIDE} px; default: {BAND} times the scale it was fitted at; 0: no band)")
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
    if args.scale is not None and not SCALES[0] <= args.scale <= SCALES[1]:
        parser.error(f"--scale must be between {SCALES[0]} and {SCALES[1]} (a share of the frame's size), not {args.scale}")
    if args.band_scale and not SCALES[0] <= args.band_scale <= SCALES[1]:
        parser.error(f"--band-scale must be 0 (no band) or between {SCALES[0]} and {SCALES[1]}, not {args.band_scale}")
    export_sign_map(args.map, min_agreement=args.min_agreement, scale=args.scale, band_scale=args.band_scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
