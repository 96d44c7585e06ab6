#!/usr/bin/env bash
# The main job, end to end: install, get data, train the default model, evaluate, export, report.
#   GTSRB_DIR=/path/to/gtsrb bash run.sh     # use a local copy (any layout signkit reads)
#   bash run.sh                              # downloads the official GTSRB into data/GTSRB first
#   GTSDB_DIR=/path/to/gtsdb bash run.sh     # also road frames (frames + gt.txt) to score the frame pipeline on;
#   GTSDB_TRAIN_DIR=/path/to/gtsdb-train     # and other frames to fit it on: the proposal ranking and a
#                                            # "not a sign" class are learned there, all of GTSDB_DIR scores it.
#                                            # Without GTSDB_TRAIN_DIR: fitted on GTSDB_DIR's even frames, scored on the odd
#   SIGN_MAP=0                               # with GTSDB_DIR: no learned "sign here" map beside the colour cues
# Extra arguments go to `python -m train` (e.g. --epochs 10).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "run.sh: cannot create .venv; install venv support (sudo apt install python3-venv) and retry" >&2; exit 1; }
fi
if [ ! -f .venv/.signkit-train ] || [ pyproject.toml -nt .venv/.signkit-train ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[train]'
  touch .venv/.signkit-train
fi
PYBIN=.venv/bin/python
DATA=${GTSRB_DIR:-data/GTSRB}
if [ ! -e "$DATA" ]; then
  $PYBIN -m train.download gtsrb --to "$DATA"
fi
RUN=${RUN_DIR:-runs/quickstart}
# A training that stalls (TensorFlow can deadlock between two epochs) exits with status 75 after
# --stall-minutes, its finished epochs checkpointed: resume it, twice at most.
train_model() {
  local rc=0 tries=0
  $PYBIN -m train "$@" || rc=$?
  while [ "$rc" -eq 75 ] && [ "$tries" -lt 2 ]; do
    tries=$((tries + 1))
    rc=0
    echo "run.sh: the training stalled; resuming it from its last finished epoch ($tries of 2)" >&2
    $PYBIN -m train --resume --out "$RUN" || rc=$?
  done
  return "$rc"
}
if [ -n "${GTSDB_DIR:-}" ]; then
  # "not a sign" crops: 30 a frame of a fitting set like gtsdb-train (300 frames), 150 a frame of 30 even frames
  if [ -n "${GTSDB_TRAIN_DIR:-}" ]; then FIT=("$GTSDB_TRAIN_DIR" --subset all); PER=30; else FIT=("$GTSDB_DIR" --subset even); PER=150; fi
  mkdir -p "$RUN"
  $PYBIN -m train.frames.ranker --frames "${FIT[@]}" --out "$RUN/proposal_ranker.json" --quiet
  $PYBIN -m train.frames.negatives --frames "${FIT[@]}" --per-frame "$PER" --ranker "$RUN/proposal_ranker.json" --out "$RUN/negatives"
  # the frame model is edge without CLAHE: edge-xs + CLAHE, trained the same way, let 65 background boxes through on
  # held-out frames against edge's 4 (docs/decisions.md)
  train_model --data "$DATA" --out "$RUN" --background "$RUN/negatives" --zoom 0.2 --shift 0.1 \
    --arch edge --contrast none "$@"
else
  train_model --data "$DATA" --out "$RUN" "$@"
fi
$PYBIN -m bench.evaluate --run "$RUN" --data "$DATA" --split val test --skip-missing
$PYBIN -m export.all --run "$RUN"
if [ -n "${GTSDB_DIR:-}" ]; then  # frames that fitted the ranker, the negatives or the map are left out by bench.gtsdb itself
  MAP=()
  if [ "${SIGN_MAP:-1}" != 0 ]; then
    # a learned proposal source, GTSRB signs pasted into its training crops: it finds signs no colour cue does
    if $PYBIN -m train.frames.sign_map --frames "${FIT[@]}" --paste "$DATA" --out "$RUN/sign-map" --quiet \
        && $PYBIN -m export.sign_map --map "$RUN/sign-map"; then
      MAP=(--sign-map "$RUN/sign-map/sign_map_int8.tflite")
    else
      echo "run.sh: no sign map (the error above); the frame pipeline is scored with the colour cues alone" >&2
    fi
  fi
  SCORE=($PYBIN -m bench.gtsdb --build "$RUN/model_int8.tflite" --ranker "$RUN/proposal_ranker.json" --frames "$GTSDB_DIR")
  {
    echo "colour cues alone:"
    "${SCORE[@]}"
    if [ ${#MAP[@]} -gt 0 ]; then  # the map finds more signs and costs frame rate: both, side by side
      echo "colour cues and the sign map:"
      "${SCORE[@]}" "${MAP[@]}"
    fi
  } | tee "$RUN/gtsdb_report.txt"
fi
REPORT=($PYBIN -m bench.report --run "$RUN" --data "$DATA")
[ -n "${GTSDB_DIR:-}" ] && REPORT+=(--frames "$GTSDB_DIR")
"${REPORT[@]}"
echo "run.sh: done. Model, builds and reports are in $RUN/; open $RUN/report/report.html"
