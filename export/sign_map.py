"""Export a fitted sign map as an int8 TFLite proposal source, gated against the float map.

    python -m export.sign_map --map runs/quickstart/sign-map

``python -m train.frames.sign_map`` writes MAP/sign_map.keras and MAP/fit.json (the frames it was
fitted on); this writes MAP/sign_map_int8.tflite and its sidecar, which ``runtime.sign_map`` reads.
Calibration uses 40 of the fitting frames at the map's input size. The gate: on 20 of them, the int8
map must find the float map's confident peaks (score >= GATE_SCORE) in place and size; a map that
fails it is not written. The sidecar names the frames by stem and their gt.txt by checksum (no
path of this machine), so ``bench.gtsdb`` leaves them out wherever the map is deployed.
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
from runtime.sign_map import MAP_FILE, MAP_FORMAT, decode
from train.device import gpu_available, select_backend

GATE_SCORE = 0.2  # the gate compares the float and int8 maps' peaks from this score up
GATE_SIDE = 1.25  # ... and their signs' sides, to within this factor
CALIB_FRAMES = 40
CHECK_FRAMES = 20


def peak_agreement(ref: np.ndarray, out: np.ndarray, meta: dict[str, Any], min_score: float = GATE_SCORE) -> tuple[int, int]:
    """Of the float map's peaks scoring at least ``min_score``, how many the int8 map has: a peak within one cell
    whose sign side is within GATE_SIDE of the float map's. (found, peaks)

    Peaks just above the map's own threshold come and go with the int8 output's rounding; they are the least
    sign-like proposals, so the gate holds the int8 map to the float map's confident ones, place and size."""
    a, sa = decode(ref, 1, meta["min_score"], meta["top_k"], 1.0, 1.0, meta["size_unit"])
    b, _ = decode(out, 1, meta["min_score"], meta["top_k"], 1.0, 1.0, meta["size_unit"])
    a = a[sa >= min_score]
    if not len(a):
        return 0, 0
    if not len(b):
        return 0, len(a)
    ca, cb = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    near = np.abs(ca[:, None, :] - cb[None, :, :]).max(axis=2) <= 1.0
    ratio = (b[None, :, 2] - b[None, :, 0]) / (a[:, None, 2] - a[:, None, 0])
    same_size = (ratio <= GATE_SIDE) & (ratio >= 1 / GATE_SIDE)
    return int((near & same_size).any(axis=1).sum()), len(a)


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


def fitting_frames(fit: dict[str, Any], height: int, width: int) -> list[np.ndarray]:
    """The frames the map was fitted on, at its input size (what it is calibrated and gated on)."""
    import cv2

    out = []
    for source in fit["sources"]:
        folder = Path(source["path"])
        if not folder.is_dir():
            raise ConfigError(f"the frames {folder} the map was fitted on are gone; the export calibrates on them: restore "
                              f"them or fit the map again")
        files, _ = frame_files(folder)
        out += [cv2.resize(read_frame(files[s]), (width, height), interpolation=cv2.INTER_AREA)
                for s in source["frames"] if s in files]
    if not out:
        raise ConfigError("none of the frames the map was fitted on is on disk any more; fit the map again")
    return out


def export_sign_map(folder: Path, *, min_agreement: float = 0.9) -> Path:
    """Convert MAP/sign_map.keras to int8, gate it, write MAP/sign_map_int8.tflite and its sidecar; its path.

    Raises:
        ConfigError: no fitted map in ``folder``, or its fitting frames are gone.
        BuildError: the int8 map does not find the float map's peaks (nothing is written then).
    """
    fit = read_fit(folder)
    select_backend("tensorflow", "auto")
    gpu_available("tensorflow")  # starts TensorFlow without its CUDA notes on a machine without a GPU
    import keras

    model = keras.models.load_model(folder / "sign_map.keras", compile=False)
    h, w = (int(v) for v in model.input_shape[1:3])
    smalls = fitting_frames(fit, h, w)

    def scaled(frames: Sequence[np.ndarray]) -> np.ndarray:  # only the frames used: all of them at once are ~1 GB
        return np.stack(frames).astype(np.float32) / 255.0

    calib = scaled([smalls[i] for i in np.random.default_rng(0).permutation(len(smalls))[:CALIB_FRAMES]])
    check = scaled(smalls[:CHECK_FRAMES])
    data = to_tflite(model, "int8", calib)
    dest = folder / MAP_FILE
    tmp = dest.with_name(dest.name + ".check.tflite")
    tmp.write_bytes(data)
    decoding = {k: fit[k] for k in ("min_score", "top_k", "size_unit")}
    try:
        backend = TFLiteBackend(tmp, threads=1)
        found = peaks = 0
        for xi in check:
            f, n = peak_agreement(model.predict(xi[None], verbose=0)[0], backend.run(xi[None])[0], decoding)
            found, peaks = found + f, peaks + n
    finally:
        tmp.unlink(missing_ok=True)
    if not peaks and min_agreement > 0:
        raise BuildError(f"the float sign map has no peak scoring {GATE_SCORE} or more on {len(check)} of the frames it "
                         "was fitted on; not written. Fit it longer or on more annotated frames")
    agreement = found / peaks if peaks else 1.0
    if agreement < min_agreement:
        raise BuildError(f"the int8 sign map finds {found} of the float map's {peaks} peaks scoring {GATE_SCORE} or more "
                         f"({agreement:.1%} < {min_agreement:.1%}); not written. Fit it longer or on more frames")
    meta = {"format": MAP_FORMAT, "input": [h, w, 3], "colour": "bgr", **{k: fit[k] for k in ("scale", "stride")},
            **decoding, "fitted_on": [{"gt_sha256": src["gt_sha256"], "frames": src["frames"]} for src in fit["sources"]],
            "steps": fit["steps"], "training_seconds": fit["training_seconds"], "params": int(model.count_params()),
            "macs": fit.get("macs"), "int8_peak_agreement": round(agreement, 4),
            "gate": {"min_score": GATE_SCORE, "side_within": GATE_SIDE, "min_agreement": min_agreement},
            "pasted": fit.get("pasted"), "model_sha256": hashlib.sha256(data).hexdigest()}
    write_bytes_atomic(dest, data)
    write_text_atomic(sidecar_of(dest), json.dumps(meta, indent=2))
    print(f"sign map: {meta['params']:,} params, {len(data) / 1024:.1f} KB int8, finds {found} of the float map's "
          f"{peaks} peaks scoring {GATE_SCORE} or more -> {dest}")
    return dest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.sign_map", formatter_class=HelpFormatter,
        description="Export a fitted sign map as int8 TFLite, gated against the float map.",
        epilog="examples:\n  python -m export.sign_map --map runs/quickstart/sign-map\n"
               "  python -m export.sign_map --map runs/sign-map --min-agreement 0.95",
    )
    p.add_argument("--map", type=Path, required=True, help="the folder python -m train.frames.sign_map --out wrote")
    p.add_argument("--min-agreement", type=float, default=0.9,
                   help="share of the float map's confident peaks the int8 map must find, in place and size")
    return p


@cli_errors("python -m export.sign_map")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.min_agreement <= 1:
        parser.error(f"--min-agreement must be between 0 and 1, not {args.min_agreement}")
    export_sign_map(args.map, min_agreement=args.min_agreement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
