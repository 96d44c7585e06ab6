"""The runtime on an emulated 64-bit Raspberry Pi OS (bookworm arm64, Python 3.11).

Opt-in and out of CI (minutes under qemu): ``SIGNKIT_PI_EMULATE=path/to/pi-emulate.sh bash test.sh -m pi``.
It installs only what ``pip install signkit[pi]`` would (numpy, OpenCV, ai-edge-litert; no
TensorFlow) and classifies ROIs of a frame with an int8 build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.builds import BUILDS, build_file, sidecar_of
from tests.conftest import REPO

pytestmark = [pytest.mark.pi, pytest.mark.slow]

CHECK = """
import sys, numpy as np, cv2, platform
from runtime.classifier import Classifier
assert "tensorflow" not in sys.modules
clf = Classifier.from_build("model_int8.tflite", threads=2)
frame = np.full((240, 320, 3), 100, np.uint8)
dets = clf.classify_rois(frame, [(10, 10, 60, 60), (100, 50, 150, 100)])
from runtime.proposals import propose
cv2.circle(frame, (200, 120), 30, (30, 30, 200), -1)
cv2.circle(frame, (200, 120), 22, (240, 240, 240), -1)  # a red ring: the proposal stage must find it
props = propose(frame)
assert any(abs(p.box[0] - 170) < 8 and abs(p.box[2] - 231) < 8 for p in props), props
print("PI-OK", platform.machine(), len(dets), [d.prediction.label for d in dets], clf.backend.__class__.__name__)
"""


TOOL = os.environ.get("SIGNKIT_PI_EMULATE", "")


@pytest.mark.skipif(not Path(TOOL).is_file(), reason="set SIGNKIT_PI_EMULATE to pi-emulate.sh to run this")
def test_runtime_runs_on_emulated_pi(exported, tmp_path):
    tool = TOOL
    work = tmp_path / "pi"
    shutil.copytree(REPO / "runtime", work / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    build = build_file(exported, BUILDS["tflite-int8"])
    shutil.copy(build, work / build.name)
    shutil.copy(sidecar_of(build), work / sidecar_of(build).name)
    proc = subprocess.run(["bash", tool, "-p", "numpy", "-p", "opencv-python-headless", "-p", "ai-edge-litert",
                           "-w", str(work), "--", "python", "-c", CHECK], check=False, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PI-OK aarch64 2" in proc.stdout, proc.stdout[-2000:]
