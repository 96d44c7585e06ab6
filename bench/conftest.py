"""Benchmark fixtures: the builds of one exported model, opened through the runtime.

The model folder is $SIGNKIT_BENCH_MODEL, else the most recent run under runs/ (or $SIGNKIT_RUNS)
holding builds. Builds that were not exported are skipped, never passed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from runtime.builds import BUILDS, BuildSpec, build_file
from runtime.classifier import Classifier
from runtime.errors import BackendUnavailableError


def model_dir() -> Path | None:
    if os.environ.get("SIGNKIT_BENCH_MODEL"):
        return Path(os.environ["SIGNKIT_BENCH_MODEL"])
    runs = Path(os.environ.get("SIGNKIT_RUNS", "runs"))
    found = [p.parent for p in runs.glob("*/model_int8.tflite")] if runs.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@pytest.fixture(scope="session")
def bench_model() -> Path:
    d = model_dir()
    if d is None:
        pytest.skip("no exported model: run `python -m export.all` or set SIGNKIT_BENCH_MODEL")
    return d


def open_build(folder: Path, spec: BuildSpec, threads: int) -> Classifier:
    path = build_file(folder, spec)
    if not path.is_file():
        pytest.skip(f"{spec.name} not exported in {folder}")
    try:
        return Classifier.from_build(path, threads=threads)
    except BackendUnavailableError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module", params=list(BUILDS.values()), ids=lambda b: b.name)
def build_spec(request: pytest.FixtureRequest) -> BuildSpec:
    return request.param


@pytest.fixture(scope="module")
def rois(bench_model: Path) -> np.ndarray:
    """Realistic inputs: standardised noise of the model's input shape (latency does not depend on content)."""
    import json

    meta = json.loads((bench_model / "metadata.json").read_text())
    p = meta["preprocess"]
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, p["size"], p["size"], 3 if p["colour"] == "rgb" else 1)).astype(np.float32)
