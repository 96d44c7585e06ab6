"""The runtime and the camera demo on an emulated 64-bit Raspberry Pi OS (bookworm arm64, Python 3.11).

Opt-in and out of CI (minutes under qemu): ``SIGNKIT_PI_EMULATE=path/to/pi-emulate.sh bash test.sh -m pi``.

* ``test_runtime_runs_on_emulated_pi``: what ``pip install signkit[runtime]`` installs (numpy, OpenCV and
  ai-edge-litert from pip; no TensorFlow) classifies ROIs and proposes boxes.
* ``test_camera_demo_on_emulated_pi_matches_x86``: apt's numpy 1.24 and OpenCV 4.6, the project
  installed by the README's own line (``bash camera_demo/pi/install.sh``), the demo run headless on
  a lossless video made from road frames; its boxes and labels must equal an x86 run of the same
  build and video (labels equal, boxes within BOX_TOLERANCE pixels: the int8 kernels and OpenCV differ).
  ``SIGNKIT_PI_BUILD`` names a build or a bundle (``export.bundle``) to use instead of the tiny fixture model,
  ``SIGNKIT_PI_PROFILE`` the profile to run it at (e.g. ``pi``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.builds import BUILDS, build_file, sidecar_of
from tests.fixtures import REPO, shared_data

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
needs_tool = pytest.mark.skipif(not Path(TOOL).is_file(), reason="set SIGNKIT_PI_EMULATE to pi-emulate.sh to run this")


BOX_TOLERANCE = 2  # pixels a box edge may move between x86 and arm64


def _copy_build(build: Path, work: Path) -> Path:
    """A build with its sidecar, or a bundle folder, copied into ``work``."""
    if build.is_dir():
        shutil.copytree(build, work / build.name)
        return work / build.name
    shutil.copy(build, work / build.name)
    shutil.copy(sidecar_of(build), work / sidecar_of(build).name)
    return work / build.name


@needs_tool
def test_runtime_runs_on_emulated_pi(exported, tmp_path):
    work = tmp_path / "pi"
    shutil.copytree(REPO / "runtime", work / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    _copy_build(build_file(exported, BUILDS["tflite-int8"]), work)
    proc = subprocess.run(["bash", TOOL, "-p", "numpy", "-p", "opencv-python-headless", "-p", "ai-edge-litert",
                           "-w", str(work), "--", "python", "-c", CHECK], check=False, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PI-OK aarch64 2" in proc.stdout, proc.stdout[-2000:]


def _checkout(dest: Path) -> None:
    """The project as a fresh clone holds it: the files git tracks (and untracked ones it does not ignore)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def _detections(path: Path) -> list[list[tuple[tuple[int, ...], str]]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [[(tuple(d["box"]), d["label"]) for d in r["detections"]] for r in rows]


@needs_tool
def test_camera_demo_on_emulated_pi_matches_x86(exported, tmp_path):
    from bench import drive
    from camera_demo import __main__ as demo_cli
    from tests import synth

    work = tmp_path / "signkit"
    _checkout(work)
    build = _copy_build(Path(os.environ.get("SIGNKIT_PI_BUILD") or build_file(exported, BUILDS["tflite-int8"])), work)
    root = shared_data()
    frames = root / "gtsdb" if root and (root / "gtsdb").is_dir() else synth.write_gtsdb(tmp_path / "frames", frames=2)
    assert drive.main(["--frames", str(frames), "--out", str(work / "drive.mkv"), "--max-frames", "2", "--steps", "3", "--quiet"]) == 0

    profile = ["--profile", os.environ["SIGNKIT_PI_PROFILE"]] if os.environ.get("SIGNKIT_PI_PROFILE") else []
    assert demo_cli.main(["--build", str(build), "--source", str(work / "drive.mkv"), "--headless", "--threads", "2",
                          "--jsonl", str(tmp_path / "x86.jsonl"), *profile]) == 0
    script = ("SIGNKIT_NO_PICAMERA=1 bash camera_demo/pi/install.sh && "
              f".venv/bin/python -m camera_demo --build {build.name} --source drive.mkv --headless --threads 2 "
              f"--jsonl pi.jsonl {' '.join(profile)}")
    env = {**os.environ, "PI_INCLUDE": "python3-numpy,python3-opencv,python3-venv,python3-pip",
           "PI_VENV_ARGS": "--system-site-packages", "PI_ROOT": os.environ.get("SIGNKIT_PI_ROOT", "/tmp/pi-root-apt")}
    proc = subprocess.run(["bash", TOOL, "-w", str(work), "--", "bash", "-c", script], env=env, check=False,
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "install.sh: ready on aarch64: numpy 1." in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    x86, pi = _detections(tmp_path / "x86.jsonl"), _detections(work / "pi.jsonl")
    assert len(pi) == len(x86) == 6
    for frame_pi, frame_x86 in zip(pi, x86):
        assert [label for _, label in frame_pi] == [label for _, label in frame_x86]
        for (box_pi, _), (box_x86, _) in zip(frame_pi, frame_x86):
            assert max(abs(a - b) for a, b in zip(box_pi, box_x86)) <= BOX_TOLERANCE, (box_pi, box_x86)
    print(f"emulated Pi: {sum(map(len, pi))} detections in {len(pi)} frames, the same as x86")
