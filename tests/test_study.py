"""The model study's tools: a dev-test split, MACs, degradations, CLAHE, label smoothing and python -m bench.sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.machine import describe_cpu
from runtime.preprocess import PreprocessSpec, to_model_input
from train.__main__ import main as train_main


def test_devtest_tracks_are_disjoint_from_training_and_validation(kaggle_dir):
    from train.splits import SplitRule, choose

    def sets(seed: int, devtest: float = 0.25):
        return choose(kaggle_dir, "auto", SplitRule(0.25, devtest, 3, seed), size=16, margin=0.1, use_cache=False)

    record, s = sets(0)
    tracks = [set(x.tracks) for x in (s.train, s.val, s.devtest)]
    assert all(tracks) and not (tracks[0] & tracks[1]) and not (tracks[0] & tracks[2]) and not (tracks[1] & tracks[2])
    assert len(s.train) + len(s.val) + len(s.devtest) == record.dataset.images == record.counts["train"] + \
        record.counts["val"] + record.counts["dev-test"]
    for seed in (0, 1):  # the training seed does not move the held-out tracks when the split seed is set
        again, _ = sets(seed)
        assert again.dataset.devtest == record.dataset.devtest and again.dataset.val == record.dataset.val
    plain, _ = sets(0, devtest=0.0)
    assert plain.dataset.devtest == ()  # no dev-test asked for: the split is the one runs always had


def test_count_macs_of_known_layers():
    import keras

    from train.models import count_macs

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)  # 8*8*3*3*3*4 = 6912
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8*3*3*4 = 2304
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5)(x)  # 4*5 = 20
    assert count_macs(keras.Model(inp, out)) == 6912 + 2304 + 20


def test_degradations_keep_shape_and_repeat():
    from bench.degrade import DEGRADATIONS

    crops = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    for name, f in DEGRADATIONS.items():
        a, b = f(crops), f(crops)
        assert a.shape == crops.shape and a.dtype == np.uint8 and np.array_equal(a, b), name
        assert not np.array_equal(a, crops), name
    assert DEGRADATIONS["dark"](crops).mean() < 0.5 * crops.mean()


def test_clahe_lifts_a_dark_crop_and_is_part_of_the_shared_preprocessing():
    rng = np.random.default_rng(1)
    dark = np.clip(rng.normal(30, 8, (2, 32, 32, 3)), 0, 255).astype(np.uint8)
    dark[:, 8:24, 8:24] += 25  # a faint sign on a dark background
    spec = PreprocessSpec(size=32, normalization="unit", contrast="clahe")
    x = to_model_input(dark, spec)
    plain = to_model_input(dark, PreprocessSpec(size=32, normalization="unit"))
    assert x.std() > 1.5 * plain.std()  # contrast stretched
    np.testing.assert_array_equal(to_model_input(dark[0], spec), x[0])  # one crop or a batch: the same function
    with pytest.raises(ValueError, match="contrast"):
        PreprocessSpec(contrast="bogus")


@pytest.mark.slow
def test_label_smoothing_trains_saves_and_loads(kaggle_dir, tmp_path):
    out = tmp_path / "ls"
    assert train_main(["--data", str(kaggle_dir), "--epochs", "1", "--img-size", "16", "--batch-size", "16",
                       "--label-smoothing", "0.1", "--out", str(out), "--quiet"]) == 0
    assert train_main(["--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 0  # the saved loss loads back
    from train.runs import Run

    assert Run.open(out).load_model().loss.label_smoothing == 0.1


@pytest.mark.slow
def test_sweep_trains_exports_measures_and_tabulates(tmp_path, capsys):
    from bench import sweep
    from tests import synth

    kaggle_dir = synth.write_kaggle(tmp_path / "data", tracks_per_class=10, frames=6, seed=4)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"common": ["--img-size", "16", "--batch-size", "16", "--val-fraction", "0.2",
                                           "--devtest-fraction", "0.2", "--split-seed", "0"],
                                "candidates": {"edge": ["--arch", "edge", "--contrast", "none"], "edge-ds": ["--arch", "edge-ds", "--contrast", "clahe"]},
                                "export": ["--calib-samples", "100", "--no-verify"]}))
    out = tmp_path / "study"
    assert sweep.main(["--data", str(kaggle_dir), "--plan", str(plan), "--out", str(out), "--seeds", "0", "--epochs", "1"]) == 0
    rows = {r["candidate"]: r for r in json.loads((out / "sweep.json").read_text())}
    assert set(rows) == {"edge", "edge-ds"}
    assert rows["edge-ds"]["macs_m"] < rows["edge"]["macs_m"] and rows["edge-ds"]["int8_kb"] < rows["edge"]["int8_kb"]
    study = json.loads((out / "edge" / "s0" / "study.json").read_text())
    assert 0 <= study["int8_acc"] <= 1 and study["devtest_images"] > 0 and "int8_acc_16px" in study
    assert study["cpu"] == describe_cpu() and f"on {describe_cpu()}." in (out / "sweep.md").read_text()
    assert (out / "sweep.png").is_file() and (out / "sweep.svg").is_file() and "| edge |" in (out / "sweep.md").read_text()
    mtime = (out / "edge" / "s0" / "model.keras").stat().st_mtime
    assert sweep.main(["--data", str(kaggle_dir), "--plan", str(plan), "--out", str(out), "--seeds", "0", "--epochs", "1"]) == 0
    assert (out / "edge" / "s0" / "model.keras").stat().st_mtime == mtime  # resumable: nothing done twice
    capsys.readouterr()
    assert sweep.main(["--out", str(out), "--table"]) == 0 and "edge-ds" in capsys.readouterr().out


def test_sweep_table_says_where_ms_per_roi_was_timed(tmp_path):
    """Studies measured on two CPUs (or before the CPU was recorded) are flagged, not silently compared."""
    from bench import sweep

    def study(cpu):
        return {**{k: 0.5 for k in sweep.KEYS}, **({"cpu": cpu} if cpu else {})}

    rows = sweep.summarise({"a": [study("CPU A, 2 cores, avx2"), study("CPU A, 2 cores, avx2")], "b": [study(None)]})
    assert [r["cpu"] for r in rows] == ["CPU A, 2 cores, avx2", "not recorded"]
    md = sweep.write_table(tmp_path, rows, "python -m bench.sweep").read_text()
    assert "on CPU A, 2 cores, avx2 and not recorded." in md and "different CPUs" in md
    md = sweep.write_table(tmp_path, rows[:1], "python -m bench.sweep").read_text()
    assert "on CPU A, 2 cores, avx2." in md and "different CPUs" not in md


def test_the_table_lists_the_classes_each_candidate_moved_against_the_base(tmp_path):
    from bench import sweep

    def study(recall, names=("stop", "yield", "keep right")):
        return {**{k: 0.5 for k in sweep.KEYS}, "cpu": "CPU A", "per_class_recall": {str(c): r for c, r in enumerate(recall)},
                "class_names": list(names)}

    results = {"base": [study([0.90, 1.0, 0.98]), study([0.70, 1.0, 0.98])],  # class 0: 80 % over the two seeds
               "new": [study([0.95, 0.96, 0.99]), study([0.95, 0.96, 0.98])]}
    moved = sweep.classes_moved(results, "base")
    assert moved == {"new": [("yield (1)", 100.0, 96.0), ("stop (0)", 80.0, 95.0)]}  # most fallen first; 0.5 pp left out
    md = sweep.write_table(tmp_path, sweep.summarise(results), "python -m bench.sweep", ("base", moved)).read_text()
    assert "moved by 2 points or more from base's" in md and "- new: yield (1) 100.0 → 96.0; stop (0) 80.0 → 95.0" in md
    with pytest.raises(ConfigError, match="--base other"):
        sweep.classes_moved(results, "other")
