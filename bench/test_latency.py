"""Latency of every build through the runtime: one ROI, and the 8 ROIs of a busy frame in one invoke.

    pytest bench/ --benchmark-only
    SIGNKIT_BENCH_MODEL=runs/edge-default pytest bench/ --benchmark-only --benchmark-columns=median,iqr,ops
"""

from __future__ import annotations

import pytest

from bench.conftest import open_build


@pytest.mark.parametrize("threads", [1, 2])
def test_one_roi(benchmark, bench_model, build_spec, rois, threads):
    clf = open_build(bench_model, build_spec, threads)
    x = rois[:1]
    clf.predict_proba(x)  # warm-up: allocate tensors at this batch size
    benchmark.group = f"1 ROI, {threads} thread(s)"
    benchmark.extra_info.update(backend=build_spec.backend, precision=build_spec.precision, threads=threads, batch=1,
                                size_kb=round(clf.path.stat().st_size / 1024, 1))
    probs = benchmark(clf.predict_proba, x)
    assert probs.shape == (1, len(clf.class_names))


@pytest.mark.parametrize("threads", [1, 2])
def test_eight_rois_one_invoke(benchmark, bench_model, build_spec, rois, threads):
    clf = open_build(bench_model, build_spec, threads)
    clf.predict_proba(rois)
    benchmark.group = f"8 ROIs, {threads} thread(s)"
    benchmark.extra_info.update(backend=build_spec.backend, precision=build_spec.precision, threads=threads, batch=8)
    probs = benchmark(clf.predict_proba, rois)
    assert probs.shape == (8, len(clf.class_names))
