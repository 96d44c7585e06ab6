"""The main job's script, its steps in order, with a stand-in Python that records each call (no install, no training)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    shutil.copy(REPO / "run.sh", tmp_path / "run.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    log = tmp_path / "calls"
    (venv / "python").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
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
