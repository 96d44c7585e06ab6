"""The main job's script, its steps in order, with a stand-in Python that records each call (no install, no training)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, fail: str = "", **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """run.sh with a stand-in Python that logs each call and succeeds, except calls whose arguments contain ``fail``."""
    shutil.copy(REPO / "run.sh", tmp_path / "run.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    log = tmp_path / "calls"
    failing = f'case "$*" in *"{fail}"*) exit 1;; esac\n' if fail else ""
    (venv / "python").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n{failing}')
    (venv / "python").chmod(0o755)
    (tmp_path / ".venv" / ".signkit-train").touch()  # installed: newer than pyproject.toml
    (tmp_path / "gtsrb").mkdir()
    proc = subprocess.run(["bash", str(tmp_path / "run.sh"), "--epochs", "2"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GTSRB_DIR": str(tmp_path / "gtsrb"), **env}, check=False)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_the_plain_recipe_trains_evaluates_exports_and_reports(tmp_path):
    proc, calls = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = str(tmp_path / "gtsrb")
    assert calls[0] == f"-m train --out runs/quickstart --data {data} --epochs 2"
    assert [c.split()[1] for c in calls[1:]] == ["bench.evaluate", "export.all", "bench.report"]


def test_the_distilled_recipe_trains_the_teacher_first_and_the_student_from_it(tmp_path):
    proc, calls = _run(tmp_path, DISTILL="1")
    assert proc.returncode == 0, proc.stderr
    data = str(tmp_path / "gtsrb")
    assert calls[0] == (f"-m train --out runs/quickstart/teacher --data {data} --arch edge-l --img-size 48 --erase 0.25 "
                        "--perspective 0.08 --epochs 2")
    assert calls[1] == f"-m train --out runs/quickstart --data {data} --teacher runs/quickstart/teacher --epochs 2"
    assert [c.split()[1] for c in calls[2:]] == ["bench.evaluate", "export.all", "bench.report"]


def test_distillation_with_road_frames_is_refused_before_anything_runs(tmp_path):
    proc, calls = _run(tmp_path, DISTILL="1", GTSDB_DIR=str(tmp_path))
    assert proc.returncode == 2 and calls == []
    assert proc.stderr.count("\n") == 1 and "leave out GTSDB_DIR" in proc.stderr


def test_the_frame_recipe_fits_its_parts_on_the_fitting_frames_and_scores_one_bundle(tmp_path):
    run = "runs/quickstart"
    fit = f"{tmp_path}/a {tmp_path}/b"
    score = str(tmp_path / "score")
    proc, calls = _run(tmp_path, GTSDB_DIR=score, GTSDB_TRAIN_DIR=fit)
    assert proc.returncode == 0, proc.stderr
    steps = [c.split()[1] for c in calls]
    assert steps == ["train.frames.ranker", "train.frames.negatives", "train", "bench.evaluate", "export.all",
                     "train.frames.sign_map", "export.sign_map", "export.bundle", "bench.gtsdb", "bench.gtsdb", "bench.gtsdb",
                     "bench.report"]
    assert f"--frames {fit} --subset all --per-frame 30 " in calls[1]
    assert f"--background {run}/negatives" in calls[2] and "--arch edge-xs" in calls[2] and calls[2].endswith("--epochs 2")
    assert f"--frames {fit} --subset all " in calls[5] and "--steps 72000" in calls[5] and "--resume" in calls[5]
    assert calls[7].endswith(f"--sign-map {run}/sign-map/sign_map_int8.tflite --profile pi --out {run}/bundle")
    assert [c.split()[-2:] for c in calls[8:11]] == [["--profile", "full"], ["--profile", "pi"], ["--profile", "pi-fast"]]
    assert all(f"--build {run}/bundle --frames {score}" in c for c in calls[8:11])
    assert calls[11].endswith(f"--frames {score}")


def test_without_a_sign_map_the_bundle_is_meant_for_the_full_profile(tmp_path):
    """The map's fit failing (or SIGN_MAP=0) leaves a bundle of the colour cues alone, scored at the full profile."""
    for case, env in (("fails", {}), ("off", {"SIGN_MAP": "0"})):
        (tmp_path / case).mkdir()
        proc, calls = _run(tmp_path / case, fail="--steps 72000" if case == "fails" else "", GTSDB_DIR=str(tmp_path / "score"),
                           GTSDB_TRAIN_DIR=str(tmp_path / "a"), **env)
        assert proc.returncode == 0, proc.stderr
        assert ("no sign map (the error above)" in proc.stderr) == (case == "fails")
        bundle = next(c for c in calls if c.startswith("-m export.bundle"))
        assert "--sign-map" not in bundle and "--profile full" in bundle
        assert [c.split()[-2:] for c in calls if c.startswith("-m bench.gtsdb")] == [["--profile", "full"]]
        assert not any(c.startswith("-m export.sign_map") for c in calls)
