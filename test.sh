#!/usr/bin/env bash
# Install signkit with its dev extras into .venv (first run only) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "test.sh: cannot create .venv; install venv support (sudo apt install python3-venv) and retry" >&2; exit 1; }
fi
if [ ! -f .venv/.signkit-dev ] || [ pyproject.toml -nt .venv/.signkit-dev ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch .venv/.signkit-dev
fi
# The latency benchmarks run once each, as tests (--benchmark-disable), unless you ask for timings:
#   bash test.sh bench/ --benchmark-only      (the same as: pytest bench/ --benchmark-only)
case " $* " in *" --benchmark-only "*|*" --benchmark-enable "*) timing=() ;; *) timing=(--benchmark-disable) ;; esac
exec .venv/bin/python -m pytest "${timing[@]}" "$@"
