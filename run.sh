#!/usr/bin/env bash
# The main job, end to end: install, get data, train the default model, evaluate, export, report.
#   GTSRB_DIR=/path/to/gtsrb bash run.sh     # use a local copy (any layout signkit reads)
#   bash run.sh                              # downloads the official GTSRB into data/GTSRB first
#   GTSDB_DIR=/path/to/gtsdb bash run.sh     # also road frames (frames + gt.txt) to score the frame pipeline on;
#   GTSDB_TRAIN_DIR="/path/a /path/b"        # and other frames to fit it on (space-separated folders): the proposal
#                                            # ranking, a "not a sign" class and the sign map are learned there, and
#                                            # the parts go into one bundle (RUN/bundle) scored on all of GTSDB_DIR.
#                                            # Without GTSDB_TRAIN_DIR: fitted on GTSDB_DIR's even frames, scored on the odd
#   SIGN_MAP=0                               # with GTSDB_DIR: no learned "sign here" map beside the colour cues
#   DISTILL=1 bash run.sh                    # the second recipe: a large teacher first (RUN/teacher, hours on a CPU),
#                                            # then the default classifier learns from its outputs too (docs/results.md)
# Extra arguments go to `python -m train` (e.g. --epochs 10).
set -euo pipefail
cd "$(dirname "$0")"
if [ "${DISTILL:-0}" = 1 ] && [ -n "${GTSDB_DIR:-}" ]; then
  echo "run.sh: DISTILL=1 trains the default classifier; the frame pipeline's model is not distilled: leave out GTSDB_DIR" >&2
  exit 2
fi
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
train_model() {  # OUT, then the training's other arguments
  local out=$1 rc=0 tries=0
  shift
  $PYBIN -m train --out "$out" "$@" || rc=$?
  while [ "$rc" -eq 75 ] && [ "$tries" -lt 2 ]; do
    tries=$((tries + 1))
    rc=0
    echo "run.sh: the training stalled; resuming it from its last finished epoch ($tries of 2)" >&2
    $PYBIN -m train --resume --out "$out" || rc=$?
  done
  return "$rc"
}
if [ -n "${GTSDB_DIR:-}" ]; then
  # "not a sign" crops: 30 a frame of fitting folders (gtsdb-train and gtsdb-more: 540 frames), 150 a frame of 30 even frames
  if [ -n "${GTSDB_TRAIN_DIR:-}" ]; then
    read -r -a TRAIN_DIRS <<< "$GTSDB_TRAIN_DIR"
    FIT=("${TRAIN_DIRS[@]}" --subset all); PER=30
  else
    FIT=("$GTSDB_DIR" --subset even); PER=150
  fi
  mkdir -p "$RUN"
  $PYBIN -m train.frames.ranker --frames "${FIT[@]}" --out "$RUN/proposal_ranker.json" --quiet
  $PYBIN -m train.frames.negatives --frames "${FIT[@]}" --per-frame "$PER" --ranker "$RUN/proposal_ranker.json" \
    --out "$RUN/negatives" --quiet
  # the frame model is the default's size without CLAHE, with the background class (docs/decisions.md)
  train_model "$RUN" --data "$DATA" --background "$RUN/negatives" --zoom 0.2 --shift 0.1 \
    --arch edge-xs --contrast none "$@"
elif [ "${DISTILL:-0}" = 1 ]; then
  # the teacher: edge at widths 48/96/192 on 48-pixel crops, erasing and perspective for the look-alike pairs; it
  # holds out the same tracks as the student (the same split), which the student's training checks
  train_model "$RUN/teacher" --data "$DATA" --arch edge-l --img-size 48 --erase 0.25 --perspective 0.08 "$@"
  train_model "$RUN" --data "$DATA" --teacher "$RUN/teacher" "$@"
else
  train_model "$RUN" --data "$DATA" "$@"
fi
$PYBIN -m bench.evaluate --run "$RUN" --data "$DATA" --split val test --skip-missing
$PYBIN -m export.all --run "$RUN"
if [ -n "${GTSDB_DIR:-}" ]; then  # frames that fitted the ranker, the negatives or the map are left out by bench.gtsdb itself
  MAP=()
  if [ "${SIGN_MAP:-1}" != 0 ]; then
    # a learned proposal source, GTSRB signs pasted into its training crops: it finds signs no colour cue does;
    # the light trunk costs a fifth of the standard one's multiply-accumulates a frame; 72,000 steps on 540
    # frames are as many a frame as the held-out fold's best map had (40,000 on 300; docs/decisions.md);
    # --resume: run.sh again continues a fit cut short (it checkpoints every 1000 steps) and keeps a finished one
    if $PYBIN -m train.frames.sign_map --frames "${FIT[@]}" --paste "$DATA" --trunk light --steps 72000 \
        --out "$RUN/sign-map" --quiet --resume \
        && $PYBIN -m export.sign_map --map "$RUN/sign-map"; then
      MAP=(--sign-map "$RUN/sign-map/sign_map_int8.tflite")
    else
      echo "run.sh: no sign map (the error above); the frame pipeline is scored with the colour cues alone" >&2
    fi
  fi
  # one folder a camera demo or bench.gtsdb takes alone (the Raspberry Pi guide copies it); the pi profile reads the
  # sign map's boxes alone, so a bundle without a map is meant for the full one
  PROFILE=pi; [ ${#MAP[@]} -gt 0 ] || PROFILE=full
  $PYBIN -m export.bundle --run "$RUN" "${MAP[@]}" --profile "$PROFILE" --out "$RUN/bundle"
  SCORE=($PYBIN -m bench.gtsdb --build "$RUN/bundle" --frames "$GTSDB_DIR")
  {
    echo "the bundle, every proposal read (--profile full):"
    "${SCORE[@]}" --profile full
    if [ "$PROFILE" = pi ]; then
      echo "the bundle at the Raspberry Pi's budget (--profile pi):"
      "${SCORE[@]}" --profile pi
      echo "the same without the map's band (--profile pi-fast):"
      "${SCORE[@]}" --profile pi-fast
    fi
  } | tee "$RUN/gtsdb_report.txt"
fi
REPORT=($PYBIN -m bench.report --run "$RUN" --data "$DATA")
[ -n "${GTSDB_DIR:-}" ] && REPORT+=(--frames "$GTSDB_DIR")
"${REPORT[@]}"
echo "run.sh: done. Model, builds and reports are in $RUN/; open $RUN/report/report.html"
