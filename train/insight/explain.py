"""What a model looks at: activations of every conv layer, Grad-CAM, dead filters, first-layer weights, an explorer page.

    python -m train.insight.explain --run runs/quickstart                       # 8 validation images, errors first
    python -m train.insight.explain --run runs/quickstart --images a.png b.png --labels 14 33 --html

Per image: each feature layer's activation maps as a grid (each filter normalised on its own),
Grad-CAM for the predicted and the true class over the crop (gradients of the ``logits`` layer
with respect to the last feature map), and the top 5. Across a validation sample: the filters
that are never active (dead) per layer, as a table (notebook E's open question). The first conv
layer's weights as an image grid. ``--html`` writes one self-contained explorer page: pick an image
and a layer, see its maps and the top 5 (what notebook E's web tool did, without a server).
Grad-CAM needs gradients: this runs under Keras's TensorFlow backend.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.preprocess import crop_and_resize, to_model_input
from train.runs import Run

FEATURE_TYPES = ("ReLU", "LeakyReLU", "Activation", "ELU", "PReLU")


def require_tensorflow_backend() -> None:
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        raise ConfigError(f"train.insight.explain computes Grad-CAM with TensorFlow gradients, but KERAS_BACKEND={backend}; "
                          f"unset it or run with KERAS_BACKEND=tensorflow")
    os.environ["KERAS_BACKEND"] = "tensorflow"


def feature_layers(model: Any) -> list[Any]:
    """The layers whose outputs are a conv block's activation maps: ReLU-like layers on 4-D tensors, and convs
    with an activation of their own (notebook D's style)."""
    out = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        if shape is None or len(layer.output.shape) != 4:
            continue
        kind = type(layer).__name__
        own = kind in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D") and getattr(layer.activation, "__name__", "linear") != "linear"
        if kind in FEATURE_TYPES or own:
            out.append(layer)
    return out


@dataclass
class Explained:
    names: list[str]  # feature layer names
    maps: list[np.ndarray]  # per layer: (N, H, W, C)
    probs: np.ndarray  # (N, classes)
    cams: dict[str, np.ndarray]  # "predicted" / "true": (N, S, S) in [0, 1]


def explain(model: Any, x: np.ndarray, true: np.ndarray | None) -> Explained:
    """Activations of every feature layer, probabilities, and Grad-CAM of the predicted (and true) class."""
    import keras
    import tensorflow as tf

    layers = feature_layers(model)
    if not layers:
        raise ConfigError(f"{model.name} has no conv activation layers to show")
    try:
        logits_layer = model.get_layer("logits")
    except ValueError:
        raise ConfigError(f"{model.name} has no 'logits' layer; Grad-CAM needs the pre-softmax scores") from None
    probe = keras.Model(model.inputs[0], [*(layer.output for layer in layers), logits_layer.output, model.output])
    size = x.shape[1]
    with tf.GradientTape(persistent=True) as tape:
        outs = probe(tf.convert_to_tensor(x), training=False)
        *maps, logits, probs = outs
        last = maps[-1]
        pred = tf.argmax(probs, axis=1)
        chosen = {"predicted": tf.gather(logits, pred, axis=1, batch_dims=1)}
        if true is not None:
            chosen["true"] = tf.gather(logits, tf.constant(true, tf.int64), axis=1, batch_dims=1)
    cams = {}
    for key, score in chosen.items():
        grads = tape.gradient(score, last)  # d score / d last feature map
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * last, axis=-1)).numpy()
        cam = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in cam])
        cams[key] = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-9)
    del tape
    return Explained([layer.name for layer in layers], [m.numpy() for m in maps], probs.numpy(), cams)


def dead_filters(model: Any, x: np.ndarray, batch: int = 128) -> list[dict[str, Any]]:
    """Per feature layer: filters never above zero on any image and position (dead), and rarely active ones."""
    import keras

    layers = feature_layers(model)
    probe = keras.Model(model.inputs[0], [layer.output for layer in layers])
    peak = [np.zeros(int(layer.output.shape[-1])) for layer in layers]
    active = [np.zeros(int(layer.output.shape[-1])) for layer in layers]
    positions = [0] * len(layers)
    for i in range(0, len(x), batch):
        outs = probe(x[i:i + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for k, a in enumerate(outs):
            a = np.asarray(a)
            peak[k] = np.maximum(peak[k], a.max(axis=(0, 1, 2)))
            active[k] += (a > 1e-6).sum(axis=(0, 1, 2))
            positions[k] += a.shape[0] * a.shape[1] * a.shape[2]
    rows = []
    for layer, p, act, n in zip(layers, peak, active, positions):
        share = act / max(n, 1)
        rows.append({"layer": layer.name, "filters": len(p), "dead": int((p <= 1e-6).sum()),
                     "rarely_active": int(((p > 1e-6) & (share < 0.001)).sum()), "dead_ids": np.flatnonzero(p <= 1e-6).tolist(),
                     "median_active_share": float(np.median(share))})
    return rows


def grid(maps: np.ndarray, cell: int = 48) -> np.ndarray:
    """(H, W, C) activation maps as one uint8 BGR mosaic, each filter normalised to its own range (viridis)."""
    _h, _w, c = maps.shape
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    out = np.full((rows * (cell + 2), cols * (cell + 2), 3), 40, np.uint8)
    for k in range(c):
        m = maps[..., k]
        lo, hi = float(m.min()), float(m.max())
        norm = ((m - lo) / (hi - lo) * 255).astype(np.uint8) if hi > lo else np.zeros_like(m, np.uint8)
        tile = cv2.applyColorMap(cv2.resize(norm, (cell, cell), interpolation=cv2.INTER_NEAREST), cv2.COLORMAP_VIRIDIS)
        r, q = divmod(k, cols)
        out[r * (cell + 2):r * (cell + 2) + cell, q * (cell + 2):q * (cell + 2) + cell] = tile
    return out


def overlay(crop_rgb: np.ndarray, cam: np.ndarray, scale: int = 4) -> np.ndarray:
    """A Grad-CAM heat map over the crop (BGR, enlarged ``scale`` times)."""
    size = crop_rgb.shape[0] * scale
    base = cv2.resize(cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2BGR), (size, size), interpolation=cv2.INTER_NEAREST)
    heat = cv2.applyColorMap(cv2.resize((cam * 255).astype(np.uint8), (size, size)), cv2.COLORMAP_JET)
    return cv2.addWeighted(base, 0.55, heat, 0.45, 0)


def first_layer_weights(model: Any, cell: int = 36) -> np.ndarray | None:
    """The first conv layer's kernels as an image grid (RGB kernels in colour), each normalised on its own."""
    conv = next((layer for layer in model.layers if type(layer).__name__ == "Conv2D"), None)
    if conv is None:
        return None
    k = np.asarray(conv.get_weights()[0])  # (kh, kw, cin, cout)
    _kh, _kw, cin, cout = k.shape
    cols = int(np.ceil(np.sqrt(cout)))
    rows = int(np.ceil(cout / cols))
    out = np.full((rows * (cell + 2), cols * (cell + 2), 3), 255, np.uint8)
    for f in range(cout):
        w = k[..., f]
        w = (w - w.min()) / max(float(w.max() - w.min()), 1e-9)
        img = (w if cin == 3 else np.repeat(w.mean(axis=-1, keepdims=True), 3, axis=-1)) * 255
        tile = cv2.resize(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2BGR), (cell, cell), interpolation=cv2.INTER_NEAREST)
        r, q = divmod(f, cols)
        out[r * (cell + 2):r * (cell + 2) + cell, q * (cell + 2):q * (cell + 2) + cell] = tile
    return out


def _png(image_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise ConfigError("cannot encode a PNG")
    return buf.tobytes()


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@dataclass(frozen=True)
class Sample:
    crops: np.ndarray  # uint8 RGB (N, S, S, 3)
    labels: np.ndarray | None  # true classes, -1 where unknown
    names: list[str]


def load_images(paths: Sequence[Path], labels: Sequence[int] | None, run: Run) -> Sample:
    """Image files as the model's crops (the whole file is the sign plus its margin, as a GTSRB image is)."""
    spec = run.preprocess
    crops, truth = [], []
    for i, p in enumerate(paths):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ConfigError(f"--images {p} is not a readable image")
        crops.append(crop_and_resize(img, None, spec, order="bgr"))
        if labels:
            truth.append(int(labels[i]))
        else:
            parent = Path(p).parent.name  # GTSRB's Train/<class>/... layout names the class
            truth.append(int(parent) if parent.isdigit() and int(parent) < run.num_classes else -1)
    return Sample(np.stack(crops), np.array(truth), [Path(p).name for p in paths])


def validation_sample(run: Run, n: int, seed: int = 0) -> Sample:
    """``n`` validation images: its errors first (the ones worth looking at), then random right ones."""
    val = run.split("val")
    x = to_model_input(val.images, run.preprocess)
    pred = run.load_model().predict(x, batch_size=256, verbose=0).argmax(1)
    wrong = np.flatnonzero(pred != val.labels)
    right = np.random.default_rng(seed).permutation(np.flatnonzero(pred == val.labels))
    pick = np.concatenate([wrong[: n // 2], right[: n - min(len(wrong), n // 2)]])[:n].astype(int)
    names = [Path(str(val.files[i])).name if val.files is not None else f"val #{i}" for i in pick]
    return Sample(val.images[pick], val.labels[pick], names)


def write_outputs(run: Run, sample: Sample, ex: Explained, dead: list[dict[str, Any]] | None, out: Path,
                  html_page: bool) -> dict[str, Path]:
    names = run.class_names
    paths: dict[str, Path] = {}
    top5 = np.argsort(-ex.probs, axis=1)[:, :5]
    per_image: list[dict[str, Any]] = []
    for i, name in enumerate(sample.names):
        stem = f"{i:02d}_{Path(name).stem}"
        truth = int(sample.labels[i]) if sample.labels is not None else -1
        cam_p = overlay(sample.crops[i], ex.cams["predicted"][i])
        cam_t = overlay(sample.crops[i], ex.cams["true"][i]) if "true" in ex.cams and truth >= 0 else None
        crop = cv2.resize(cv2.cvtColor(sample.crops[i], cv2.COLOR_RGB2BGR), cam_p.shape[:2][::-1], interpolation=cv2.INTER_NEAREST)
        panel = np.concatenate([crop, cam_p] + ([cam_t] if cam_t is not None else []), axis=1)
        (out / f"{stem}_gradcam.png").write_bytes(_png(panel))
        grids = {layer: _png(grid(m[i])) for layer, m in zip(ex.names, ex.maps)}
        for layer, png in grids.items():
            (out / f"{stem}_{layer}.png").write_bytes(png)
        per_image.append({"name": name, "truth": truth, "truth_name": names[truth] if truth >= 0 else None,
                          "top5": [[int(c), names[c], float(ex.probs[i, c])] for c in top5[i]],
                          "crop": _png(crop), "gradcam_predicted": _png(cam_p), "gradcam_true": _png(cam_t) if cam_t is not None else None,
                          "grids": grids})
        paths[f"{stem}_gradcam"] = out / f"{stem}_gradcam.png"
    weights = first_layer_weights(run.load_model())
    if weights is not None:
        (out / "first_layer_weights.png").write_bytes(_png(weights))
        paths["first_layer_weights"] = out / "first_layer_weights.png"
    lines = [f"# What {run.path.name} looks at", "", f"Images: {len(sample.names)}. Grad-CAM is taken at `{ex.names[-1]}`.", ""]
    lines += ["| image | truth | top 5 |", "|---|---|---|"]
    for r in per_image:
        lines.append(f"| {r['name']} | {r['truth_name'] or '-'} | " + ", ".join(f"{n} {p:.2f}" for _, n, p in r["top5"]) + " |")
    if dead is not None:
        lines += ["", "## Dead filters", "", "| layer | filters | dead (never above 0) | rarely active (<0.1 % of positions) | median active share |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {d['layer']} | {d['filters']} | {d['dead']} | {d['rarely_active']} | {100 * d['median_active_share']:.1f} % |"
                  for d in dead]
        write_text_atomic(out / "dead_filters.json", json.dumps(dead, indent=2))
        paths["dead_filters"] = out / "dead_filters.json"
    write_text_atomic(out / "explain.md", "\n".join(lines) + "\n")
    paths["summary"] = out / "explain.md"
    if html_page:
        paths["html"] = explorer_page(run, per_image, ex.names, weights, out / "explorer.html")
    return paths


EXPLORER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:14px system-ui,sans-serif;margin:1.2em}}select{{font-size:14px;margin-right:1em}}
img{{image-rendering:pixelated;border:1px solid #ccc}}figure{{display:inline-block;margin:.3em;text-align:center}}
#crop,#camp,#camt{{width:192px}}#maps{{max-width:100%}}td,th{{padding:.2em .6em;text-align:left}}</style>
</head><body data-images-total="3"><h1>{title}</h1>
<label>image <select id="image"></select></label><label>layer <select id="layer"></select></label>
<div><figure><img id="crop" alt="the crop"><figcaption>input</figcaption></figure><figure><img id="camp" alt="Grad-CAM, predicted class">
<figcaption>Grad-CAM: predicted</figcaption></figure><figure id="camt-box"><img id="camt" alt="Grad-CAM, true class">
<figcaption>Grad-CAM: true class</figcaption></figure></div>
<p id="caption"></p><table id="top5"><thead><tr><th>class</th><th>probability</th></tr></thead><tbody></tbody></table>
<h2>activation maps (each filter normalised on its own)</h2><img id="maps" alt="activation maps">
{weights}
<script>
const DATA = {data};
const img = document.getElementById('image'), lay = document.getElementById('layer');
DATA.images.forEach((d, i) => img.add(new Option(d.name + (d.truth_name ? ' (' + d.truth_name + ')' : ''), i)));
DATA.layers.forEach((l, i) => lay.add(new Option(l, i)));
function show() {{
  const d = DATA.images[img.value], l = DATA.layers[lay.value];
  document.getElementById('crop').src = d.crop;
  document.getElementById('camp').src = d.gradcam_predicted;
  const camt = document.getElementById('camt');
  camt.src = d.gradcam_true || d.gradcam_predicted;
  document.getElementById('camt-box').style.display = d.gradcam_true ? '' : 'none';
  document.getElementById('maps').src = d.grids[l];
  document.getElementById('caption').textContent = 'truth: ' + (d.truth_name || 'unknown') + '; Grad-CAM of the predicted' +
     (d.gradcam_true ? ' and of the true class' : ' class') + '; layer ' + l;
  const body = document.querySelector('#top5 tbody'); body.innerHTML = '';
  for (const [c, n, p] of d.top5) {{ const tr = body.insertRow(); tr.insertCell().textContent = c + ' ' + n; tr.insertCell().textContent = p.toFixed(3); }}
}}
img.onchange = lay.onchange = show; show();
window.addEventListener('load', () => {{
  const shown = Array.from(document.images).filter(i => i.offsetParent !== null);
  document.body.dataset.imagesTotal = shown.length;
  document.body.dataset.imagesLoaded = shown.filter(i => i.complete && i.naturalWidth > 0).length;
}});
</script></body></html>
"""


def explorer_page(run: Run, per_image: list[dict[str, Any]], layers: list[str], weights: np.ndarray | None, path: Path) -> Path:
    data = {"layers": layers, "images": [
        {"name": r["name"], "truth_name": r["truth_name"], "top5": r["top5"], "crop": _uri(r["crop"]),
         "gradcam_predicted": _uri(r["gradcam_predicted"]),
         "gradcam_true": _uri(r["gradcam_true"]) if r["gradcam_true"] else None,
         "grids": {layer: _uri(png) for layer, png in r["grids"].items()}} for r in per_image]}
    weights_html = (f'<h2>first conv layer\'s weights</h2><img src="{_uri(_png(weights))}" alt="first layer weights">'
                    if weights is not None else "")
    text = EXPLORER.format(title=html.escape(f"signkit explorer: {run.path.name}"), data=json.dumps(data), weights=weights_html)
    write_text_atomic(path, text)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.insight.explain", formatter_class=HelpFormatter,
        description="Activation maps, Grad-CAM, dead filters and first-layer weights of a trained model, and an explorer page.",
        epilog="examples:\n  python -m train.insight.explain --run runs/quickstart\n"
               "  python -m train.insight.explain --run runs/quickstart --images a.png b.png --labels 14 33 --html",
    )
    p.add_argument("--run", type=Path, required=True, help="training run folder")
    p.add_argument("--images", type=Path, nargs="+", default=None,
                   help="sign images to explain (default: validation images, errors first)")
    p.add_argument("--labels", type=int, nargs="+", default=None,
                   help="their true classes (default: the parent folder's number, as in GTSRB's Train/<class>/)")
    p.add_argument("--count", type=int, default=8, help="validation images to explain when no --images")
    p.add_argument("--dead-sample", type=int, default=512, help="validation images to look for dead filters on (0: skip)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: MODEL/explain)")
    p.add_argument("--html", action="store_true", help="also write explorer.html, one self-contained page")
    return p


@cli_errors("python -m train.insight.explain")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.labels and (not args.images or len(args.labels) != len(args.images)):
        parser.error("give one --labels value per --images file")
    if args.count < 1 or args.dead_sample < 0:
        parser.error("--count must be at least 1 and --dead-sample at least 0")
    require_tensorflow_backend()
    run = Run.open(args.run)
    out = ensure_writable_dir(args.out or run.path / "explain", "--out")
    sample = load_images(args.images, args.labels, run) if args.images else validation_sample(run, args.count)
    x = to_model_input(sample.crops, run.preprocess)
    truth = sample.labels if sample.labels is not None and (sample.labels >= 0).all() else None
    ex = explain(run.load_model(), x, truth)
    dead = None
    if args.dead_sample:
        val = run.split("val")
        pick = np.random.default_rng(0).permutation(len(val))[: args.dead_sample]
        dead = dead_filters(run.load_model(), to_model_input(val.images[pick], run.preprocess))
    paths = write_outputs(run, sample, ex, dead, out, args.html)
    print(paths["summary"].read_text())
    print(f"pictures and summary: {out}" + (f"; explorer: {paths['html']}" if "html" in paths else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
