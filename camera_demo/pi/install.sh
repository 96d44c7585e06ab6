#!/usr/bin/env bash
# Install signkit's runtime and camera demo on Raspberry Pi OS (bookworm, 64-bit), keeping apt's numpy,
# OpenCV and picamera2. Run it from anywhere inside the checkout:   bash camera_demo/pi/install.sh
#   SIGNKIT_NO_PICAMERA=1   skip python3-picamera2 (USB cameras, videos and folders only)
#   SIGNKIT_ONNX=1          also onnxruntime, to run .onnx builds (on a Pi 4, without int8 dot products, ONNX int8
#                           can be the faster build: time both with bench.gtsdb)
#   SIGNKIT_VENV=path       where the venv goes (default: .venv in the checkout)
set -euo pipefail
cd "$(dirname "$0")/../.."
packages=(python3-venv python3-pip python3-numpy python3-opencv)
[ "${SIGNKIT_NO_PICAMERA:-0}" = 1 ] || packages+=(python3-picamera2)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]} from apt" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q && $SUDO apt-get install -y -q "${missing[@]}"
fi
VENV=${SIGNKIT_VENV:-.venv}
# --system-site-packages: the venv sees apt's numpy, cv2 and picamera2 (pip's would break picamera2).
python3 -m venv --system-site-packages "$VENV"
# --no-deps: signkit itself pulls nothing (its opencv-python-headless would shadow apt's GUI-capable OpenCV).
"$VENV/bin/pip" install -q --no-deps -e .
backends=(ai-edge-litert)
[ "${SIGNKIT_ONNX:-0}" = 1 ] && backends+=(onnxruntime)
"$VENV/bin/pip" install -q -c camera_demo/pi/constraints.txt "${backends[@]}"
"$VENV/bin/python" - <<'PY'
import cv2, numpy, platform
from runtime.backends import load_tflite_interpreter_class
load_tflite_interpreter_class()
print(f"install.sh: ready on {platform.machine()}: numpy {numpy.__version__}, OpenCV {cv2.__version__}, TFLite interpreter ok")
PY
