"""Each install extra brings what it says and nothing heavier, resolved by pip in a fresh venv (nothing installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh_pip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv / "bin" / "python"


def _resolved(python: Path, spec: str) -> set[str]:
    """The distributions ``pip install SPEC`` would install into a fresh venv (pip's --dry-run report)."""
    proc = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
                           "--ignore-installed", spec], check=False, capture_output=True, text=True, timeout=900, cwd=REPO)
    if proc.returncode != 0 and ("Could not find" in proc.stderr or "connection" in proc.stderr.lower()):
        pytest.skip(f"no package index reachable: {proc.stderr.strip().splitlines()[-1][:200]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(proc.stdout)["install"]}


def test_the_base_install_is_numpy_and_opencv_only(fresh_pip):
    got = _resolved(fresh_pip, f"{REPO}")
    assert {"numpy", "opencv-python-headless", "signkit"} <= got
    assert not got & {"tensorflow", "keras", "ai-edge-litert", "onnxruntime", "matplotlib"}


def test_the_runtime_extra_brings_both_backends_and_no_tensorflow(fresh_pip):
    got = _resolved(fresh_pip, f"{REPO}[runtime]")
    assert {"ai-edge-litert", "onnxruntime", "numpy", "opencv-python-headless"} <= got
    assert not got & {"tensorflow", "keras", "tf2onnx", "matplotlib"}


def test_the_train_extra_brings_what_the_main_job_runs(fresh_pip):
    got = _resolved(fresh_pip, f"{REPO}[train]")
    # run.sh ends with bench.report, whose latency cases run under pytest-benchmark
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "matplotlib", "pytest",
            "pytest-benchmark"} <= got
