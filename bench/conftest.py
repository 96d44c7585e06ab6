"""Benchmark fixtures: the builds to time and realistic inputs for them (options: the root conftest.py).

    pytest bench/ --benchmark-only                          # a tiny fixture model, trained and exported here
    pytest bench/ --benchmark-only --run runs/quickstart --data data/GTSRB
    SIGNKIT_BENCH_RUN=runs/quickstart pytest bench/ --benchmark-only --benchmark-json=before.json

Builds come from ``--run RUN`` (or $SIGNKIT_BENCH_RUN); without either, a session fixture
trains the default model (edge-xs) at the real size (32x32, 43 classes) on generated data for one epoch and
exports every build once, so the command works on a fresh clone. Its latencies are those of the
real architecture (time does not depend on the weights); its accuracy means nothing. A build
that is not there, or whose backend is not installed, is skipped with the reason.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.builds import BUILDS, BuildSpec, build_file
from runtime.classifier import Classifier
from runtime.errors import BackendUnavailableError, BuildError
from runtime.machine import describe_cpu
from tests.fixtures import shared_data

ALL_CORES = os.cpu_count() or 1
THREADS = sorted({1, ALL_CORES})


def run_option(config: pytest.Config) -> Path | None:
    value = config.getoption("--run", default=None) or os.environ.get("SIGNKIT_BENCH_RUN")
    return Path(value) if value else None


def _versions() -> dict[str, str]:
    import cv2

    out = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
           "machine": platform.machine(), "cpu": describe_cpu()}
    for name in ("ai_edge_litert", "tflite_runtime", "onnxruntime"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except ImportError:
            pass
    return out


VERSIONS = _versions()


def _latency_twin(root: Path) -> Path:
    """The default model at the real input size and class count, trained one epoch on generated signs, every build exported.

    Where TensorFlow is not installed (a Pi, a runtime-only venv) there is nothing to train it with: the cases that
    time a build skip, saying to pass --run, and the ones that need none (the proposal stage) still run."""
    import importlib.util

    try:
        missing = importlib.util.find_spec("tensorflow") is None
    except ImportError:
        missing = True
    if missing:
        pytest.skip("no build to time: pass --run RUN (a run folder with its builds); making a stand-in model here needs "
                    "TensorFlow (pip install 'signkit[train]')")
    from export import all as export_all
    from tests import synth
    from train.__main__ import main as train_main

    data = synth.write_kaggle(root / "data", num_classes=43, tracks_per_class=3, frames=4, seed=2)
    run = root / "run"
    assert train_main(["--data", str(data), "--epochs", "1", "--batch-size", "32", "--val-fraction", "0.34",
                       "--out", str(run), "--quiet"]) == 0
    # Latency does not depend on the weights, so the gate is not run: this model's accuracy is chance.
    assert export_all.main(["--run", str(run), "--calib-samples", "100", "--no-verify"]) == 0
    return run


@pytest.fixture(scope="session")
def bench_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder whose builds are timed."""
    given = run_option(request.config)
    if given is not None:
        if not given.is_dir():
            pytest.exit(f"--run {given} is not a folder; pass a training run with its builds", returncode=4)
        return given
    return _latency_twin(tmp_path_factory.mktemp("latency_twin"))


@pytest.fixture(scope="module", params=list(BUILDS.values()), ids=lambda b: b.name)
def build_spec(request: pytest.FixtureRequest) -> BuildSpec:
    return request.param


def open_build(folder: Path, spec: BuildSpec, threads: int) -> Classifier:
    path = build_file(folder, spec)
    if not path.is_file():
        pytest.skip(f"{spec.name} was not exported in {folder} (python -m export.all --run {folder})")
    try:
        return Classifier.from_build(path, threads=threads)
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    except BuildError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def road_frames() -> list[tuple[np.ndarray, list[tuple[int, int, int, int]]]]:
    """Road frames with their sign boxes: the real GTSDB frames when ../shared/data is there, else generated ones."""
    from runtime.annotations import frame_files, read_frame
    from tests import synth

    root = shared_data()
    folder = root / "gtsdb" if root is not None and (root / "gtsdb").is_dir() else None
    if folder is None:
        import tempfile

        folder = synth.write_gtsdb(Path(tempfile.mkdtemp(prefix="signkit-frames-")), frames=4, size=(1360, 800))
    files, gt = frame_files(folder)
    stems = [s for s in files if gt.get(s)][:12]
    return [(read_frame(files[s]), [a.box for a in gt[s]]) for s in stems]


@pytest.fixture(scope="session")
def real_rois(road_frames: list[tuple[np.ndarray, list[tuple[int, int, int, int]]]]) -> list[tuple[np.ndarray, list[tuple[int, int, int, int]]]]:
    """Eight sign boxes per frame (padded with neighbours of the real ones) for the batched cases."""
    out = []
    for frame, boxes in road_frames:
        w = frame.shape[1]
        grown = list(boxes)
        k = 0
        while len(grown) < 8:
            x1, y1, x2, y2 = boxes[k % len(boxes)]
            dx = (k // len(boxes) + 1) * (x2 - x1) // 2
            grown.append((max(0, x1 - dx), y1, min(w, x2 - dx), y2))
            k += 1
        out.append((frame, grown[:8]))
    return out


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """What pytest-benchmark's table does not show: p95, first invoke and peak memory of every case."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    rows = []
    for bench in session.benchmarks:
        info = bench.extra_info
        if "p95_ms" in info:
            rows.append(f"{bench.name:<52} p95 {info['p95_ms']:8.3f} ms  first invoke {info.get('first_invoke_ms', float('nan')):8.2f} ms"
                        + (f"  peak RSS {info['peak_rss_mb']:.1f} MB" if "peak_rss_mb" in info else ""))
    if rows:
        terminalreporter.section(f"signkit: p95, first invoke, peak RSS (on {VERSIONS['cpu']})")
        for row in rows:
            terminalreporter.write_line(row)
