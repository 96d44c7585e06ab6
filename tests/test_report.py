"""python -m bench.report on the tiny fixture model: tables, plots, the HTML page in a real browser, comparison."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import report
from runtime.builds import BUILDS
from tests.browser import images_loaded, rendered_dom, screenshot

pytestmark = pytest.mark.slow


def _latency_json(path, builds):
    """pytest-benchmark's JSON layout, as bench/test_latency.py writes it (the fields the report reads)."""
    benches = []
    for i, name in enumerate(builds):
        for threads in (1, 2):
            for batch in (1, 8):
                data = [0.0001 * (i + 1) * batch * (1 + 0.01 * k) for k in range(50)]
                benches.append({"name": f"test_invoke[{name}-t{threads}-b{batch}]", "params": {"threads": threads, "batch": batch},
                                "extra_info": {"threads": threads, "batch": batch, "first_invoke_ms": 2.5, "peak_rss_mb": 70.0,
                                               "versions": {"cpu": "Test CPU 9000, 2 cores, avx2 fma"}},
                                "stats": {"data": data, "median": sorted(data)[25]}})
    benches.append({"name": "test_proposals", "params": None, "extra_info": {}, "stats": {"data": [0.015], "median": 0.015}})
    path.write_text(json.dumps({"benchmarks": benches}))
    return path


@pytest.fixture(scope="module")
def reported(exported, tmp_path_factory):
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(exported, run)
    lat = _latency_json(run / "bench.json", list(BUILDS))
    assert report.main(["--run", str(run), "--latency-json", str(lat)]) == 0
    return run


def test_report_tables_and_figures(reported):
    rec = json.loads((reported / "report/report.json").read_text())
    rows = {r["build"]: r for r in rec["builds"]}
    assert set(rows) == set(BUILDS)
    for r in rows.values():
        assert r["status"] in ("passed", "exported, fails the gate") and 0 <= r["accuracy"] <= 1 and r["size_kb"] > 0
        assert r["p50_ms_t1"] > 0 and r["p95_ms_t1"] >= r["p50_ms_t1"] and r["rois_per_s_t1"] > 0
        assert r["first_invoke_ms"] == 2.5 and r["peak_rss_mb"] == 70.0
    assert rows["tflite-int8"]["integer_only"] is True and rows["tflite-f32"]["integer_only"] is None
    assert abs(rows["tflite-f32"]["accuracy"] - rec["float_accuracy"]) < 1e-9
    assert set(rec["plots"]) >= {"pareto.png", "class_recall_delta.png", "confusion.png", "latency.png", "threshold.png",
                                 "gallery_disagree.png", "gallery_errors.png"}
    md = (reported / "report/report.md").read_text()
    assert "| tflite-int8 | passed |" in md or "| tflite-int8 | exported, fails the gate |" in md
    assert rec["frame_stages_ms"]["proposals"] == pytest.approx(15.0)
    assert rec["timed_on"] == "Test CPU 9000, 2 cores, avx2 fma" and "timed on Test CPU 9000" in md


def test_a_bad_latency_json_is_refused_before_the_evaluation(exported, tmp_path, capsys):
    """A --latency-json that is not pytest-benchmark JSON stops the report at once, with one line naming the flag."""
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    assert report.main(["--run", str(exported), "--latency-json", str(bad), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "--latency-json" in err and str(bad) in err and "evaluating" not in err
    assert not (tmp_path / "r").exists()


def test_timed_on_falls_back_to_pytest_benchmarks_cpu(tmp_path):
    """A JSON from before the suite named its CPU still says what it was timed on; one that says nothing gives None."""
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": "Cortex-A76", "count": 4}},
                               "benchmarks": [{"name": "test_invoke[tflite-int8-t1-b1]", "extra_info": {}}]}))
    assert report.timed_on(report.read_latency_json(old)) == "Cortex-A76, 4 cores"
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"benchmarks": []}))
    assert report.timed_on(report.read_latency_json(bare)) is None


def test_report_page_renders_in_a_browser(reported, tmp_path):
    page = reported / "report/report.html"
    dom = rendered_dom(page)
    loaded, total = images_loaded(dom)
    assert total >= 7 and loaded == total
    assert '<table id="builds">' in dom and "tflite-int8" in dom
    png = screenshot(page, tmp_path / "report.png")
    assert png.stat().st_size > 20_000


def test_compare_shows_deltas(reported, tmp_path):
    other = reported / "report/report.json"
    assert report.main(["--run", str(reported), "--no-latency", "--compare", str(other), "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "report.json").read_text())
    rows = {r["build"]: r for r in rec["compare"]}
    assert rows["tflite-int8"]["accuracy_delta"] == pytest.approx(0.0)
    assert rows["tflite-int8"]["p50_ms_t1"] is None and rows["tflite-int8"]["p50_ms_t1_other"] > 0  # no latency this time
    assert "Compared with the other report" in (tmp_path / "report.md").read_text()


def test_report_refuses_a_run_without_builds(trained_run, capsys):
    assert report.main(["--run", str(trained_run), "--no-latency"]) == 1
    assert "has no builds" in capsys.readouterr().err
