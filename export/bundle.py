"""Put the frame pipeline's parts into one folder that a camera demo or bench.gtsdb takes alone.

    python -m export.bundle --run runs/quickstart --sign-map runs/quickstart/sign-map/sign_map_int8.tflite
    python -m export.bundle --run runs/frames --build tflite-int8 --profile pi --out /media/usb/signs

The bundle (``runtime.bundle``) holds the classifier build and its sidecar, the proposal ranking the run was fitted
with (RUN/proposal_ranker.json, else ``--ranker``, else the runtime's own) and the sign map with its sidecar (and its
band's), and a ``bundle.json`` naming each part's SHA-256 and the profile it is meant to run at. The copied metadata is
stripped of the paths of this machine (the float model's place); the fitting frames stay named by their gt.txt
checksum, so ``bench.gtsdb`` still leaves them out wherever the bundle goes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from export.metadata import embed_onnx_metadata
from runtime.atomic import locked_work_folder, write_text_atomic
from runtime.builds import BUILDS, build_file, file_sha256, read_metadata, sidecar_of, write_sidecar
from runtime.bundle import BUNDLE_FILE, BUNDLE_FORMAT, Bundle
from runtime.cli import HelpFormatter
from runtime.errors import ConfigError, cli_errors
from runtime.pipeline import PROFILES
from runtime.proposals import RANKER_FILE, Ranker
from runtime.sign_map import SignMap


def make_bundle(run: Path, out: Path, *, build: str = "tflite-int8", sign_map: Path | None = None, ranker: Path | None = None,
                profile: str = "full") -> Path:
    """Copy the parts into ``out`` (written whole: a failure leaves no half bundle), check it opens; its folder.

    Raises:
        ConfigError: a part is missing, or does not open.
    """
    model = build_file(run, BUILDS[build])
    if not model.is_file():
        raise ConfigError(f"{run} has no {build} build ({model.name}); export it with `python -m export.all --run {run}`")
    ranker = ranker or (run / "proposal_ranker.json" if (run / "proposal_ranker.json").is_file() else RANKER_FILE)
    Ranker.load(ranker)  # refuse a broken ranker now, not on the Pi
    band = SignMap(sign_map).band if sign_map is not None else None
    out = Path(out)
    with locked_work_folder(out.parent if str(out.parent) else Path("."), "export.bundle") as work:
        stage = work / out.name
        stage.mkdir()
        meta = {k: v for k, v in read_metadata(model).items() if k != "model_sha256"}
        meta["float_model"] = {k: v for k, v in (meta.get("float_model") or {}).items() if k != "path"}
        shutil.copy2(model, stage / model.name)
        if BUILDS[build].backend == "onnx":
            embed_onnx_metadata(stage / model.name, meta)
        write_sidecar(stage / model.name, meta)
        parts = {"classifier": model.name, "ranker": "proposal_ranker.json"}
        shutil.copy2(ranker, stage / "proposal_ranker.json")
        if sign_map is not None:
            shutil.copy2(sign_map, stage / sign_map.name)
            shutil.copy2(sidecar_of(sign_map), stage / sidecar_of(sign_map).name)
            parts["sign_map"] = sign_map.name
            if band is not None:  # the map's sidecar names it: it travels beside the map
                shutil.copy2(band.path, stage / band.path.name)
                shutil.copy2(sidecar_of(band.path), stage / sidecar_of(band.path).name)
                parts["sign_map_band"] = band.path.name
        manifest = {"format": BUNDLE_FORMAT, "profile": profile, "build": build,
                    "parts": {name: {"file": f, "sha256": file_sha256(stage / f)} for name, f in parts.items()},
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_text_atomic(stage / BUNDLE_FILE, json.dumps(manifest, indent=2))
        Bundle.open(stage).pipeline()  # every part opens, through the runtime
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.bundle", formatter_class=HelpFormatter,
        description="Put the frame pipeline's parts into one folder a camera demo or bench.gtsdb takes alone.",
        epilog="examples:\n  python -m export.bundle --run runs/quickstart --sign-map runs/quickstart/sign-map/sign_map_int8.tflite\n"
               "  python -m export.bundle --run runs/frames --build tflite-int8 --profile pi --out /media/usb/signs",
    )
    p.add_argument("--run", type=Path, required=True, help="the training run whose build the bundle carries")
    p.add_argument("--build", default="tflite-int8", choices=list(BUILDS), help="which of its builds")
    p.add_argument("--sign-map", type=Path, default=None, help="the sign-map build (python -m export.sign_map) to carry")
    p.add_argument("--ranker", type=Path, default=None,
                   help="proposal ranker JSON (default: RUN/proposal_ranker.json, else the runtime's own)")
    p.add_argument("--profile", default="full", choices=list(PROFILES),
                   help="the budget the pipeline runs at: " + "; ".join(f"{k}: {v.why}" for k, v in PROFILES.items()))
    p.add_argument("--out", type=Path, default=None, help="the bundle folder (default: RUN/bundle)")
    return p


@cli_errors("python -m export.bundle")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.run.is_dir():
        raise ConfigError(f"--run {args.run} does not exist; pass a run folder written by `python -m train`")
    out = make_bundle(args.run, args.out or args.run / "bundle", build=args.build, sign_map=args.sign_map,
                      ranker=args.ranker, profile=args.profile)
    print(f"bundle: {', '.join(sorted(p.name for p in out.iterdir()))} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
