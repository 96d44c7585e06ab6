"""Latency of every build through the runtime, and of the frame pipeline's stages, on real road-frame ROIs.

    pytest bench/ --benchmark-only
    pytest bench/ --benchmark-only --run runs/quickstart --benchmark-json=after.json

Ids read ``tflite-int8-t1-b8``: build, inference threads, ROIs in one invoke. Each case is warmed up
by one call before it is timed (its time is ``first_invoke_ms``); ``extra_info`` holds the backend,
precision, threads, batch, size, library versions, p95 and the peak RSS of a process that opens the
build and runs it. pytest-benchmark times every call; nothing here has a timing loop of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from bench.conftest import ALL_CORES, THREADS, VERSIONS, open_build
from runtime.builds import BUILDS, BuildSpec
from runtime.classifier import crop_rois
from runtime.pipeline import FramePipeline
from runtime.proposals import ProposalConfig, default_ranker, propose
from tests.fixtures import REPO

# VmHWM, not ru_maxrss: ru_maxrss survives exec and would count the forking pytest process (TensorFlow and all).
RSS_PROBE = """
import resource, sys, numpy as np
from runtime.classifier import Classifier
clf = Classifier.from_build(sys.argv[1], threads=1)
p = clf.preprocess
x = np.random.default_rng(0).standard_normal((8, p.size, p.size, p.channels)).astype(np.float32)
for _ in range(20):
    clf.predict_proba(x)
try:
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
except OSError:  # not Linux
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(hwm)
"""


@cache
def peak_rss_mb(path: Path) -> float:
    """Peak resident memory of a fresh process that opens the build and runs 20 invokes of 8 ROIs."""
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(path)], cwd=REPO, check=True, capture_output=True,
                         text=True, timeout=300).stdout
    return int(out.split()[-1]) / 1024  # KiB


def _info(benchmark, spec: BuildSpec, path: Path, threads: int, batch: int, first_ms: float) -> None:
    benchmark.extra_info.update(backend=spec.backend, precision=spec.precision, threads=threads, batch=batch,
                                size_kb=round(path.stat().st_size / 1024, 1), first_invoke_ms=round(first_ms, 3),
                                peak_rss_mb=round(peak_rss_mb(path), 1), versions=VERSIONS)


def _p95(benchmark) -> None:
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["p95_ms"] = round(1000 * float(np.percentile(benchmark.stats.stats.data, 95)), 4)


@pytest.mark.parametrize("batch", [1, 8], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"t{t}")
def test_invoke(benchmark, bench_run, build_spec, threads, batch, real_rois):
    clf = open_build(bench_run, build_spec, threads)
    frame, boxes = real_rois[0]
    _, _, x = crop_rois(frame, boxes[:batch], clf.preprocess)
    t0 = time.perf_counter()
    clf.predict_proba(x)  # the warm-up: tensors allocated at this batch size, caches filled
    first = 1000 * (time.perf_counter() - t0)
    benchmark.group = f"invoke, {batch} ROI{'s' if batch > 1 else ''} in one call, {threads} thread{'s' if threads > 1 else ''}"
    _info(benchmark, build_spec, clf.path, threads, batch, first)
    probs = benchmark(clf.predict_proba, x)
    _p95(benchmark)
    k = len(clf.class_names)
    # an int8 softmax output holds each probability to 1/255: its sum may be off by half a step a class
    tol = max(0.02, k / 2 / 255) if build_spec.precision == "int8" else 0.02
    assert probs.shape == (batch, k) and np.allclose(probs.sum(1), 1.0, atol=tol)


def test_proposals(benchmark, road_frames):
    frame = road_frames[0][0]
    ranker = default_ranker()
    benchmark.group = "frame stages"
    benchmark.extra_info.update(frame=f"{frame.shape[1]}x{frame.shape[0]}", versions=VERSIONS)
    props = benchmark(propose, frame, ProposalConfig(), ranker)
    _p95(benchmark)
    assert 0 < len(props) <= ProposalConfig().max_proposals


def test_crop_and_preprocess(benchmark, bench_run, road_frames):
    clf = open_build(bench_run, BUILDS["tflite-int8"], 1)
    frame = road_frames[0][0]
    boxes = [p.box for p in propose(frame)]
    benchmark.group = "frame stages"
    benchmark.extra_info.update(rois=len(boxes), size=clf.preprocess.size, versions=VERSIONS)
    _, kept, x = benchmark(crop_rois, frame, boxes, clf.preprocess)
    _p95(benchmark)
    assert len(kept) == len(boxes) and x.shape[0] == len(boxes)


def test_frame_pipeline(benchmark, bench_run, build_spec, road_frames):
    """A whole frame through runtime.pipeline.FramePipeline.run, all cores: what the camera demo calls per frame."""
    clf = open_build(bench_run, build_spec, ALL_CORES)
    pipe = FramePipeline(clf)
    frame = road_frames[0][0]
    t0 = time.perf_counter()
    result = pipe.run(frame)
    first = 1000 * (time.perf_counter() - t0)
    benchmark.group = f"frame pipeline, {ALL_CORES} threads"
    _info(benchmark, build_spec, clf.path, ALL_CORES, len(result.rois), first)
    result = benchmark(pipe.run, frame)
    _p95(benchmark)
    benchmark.extra_info["stages_ms"] = json.loads(json.dumps(result.ms.to_dict()))
    assert result.rois and all(d.proposal is not None for d in result.detections)

