#!/usr/bin/env bash
# Short recipe probes on the built-in data v2 (issue 9): the cpu-long preset's 500-step
# schedule (2 epochs of 8 000 scenes), DINO, with the recipe cpu-long had while the probes ran
# (no head BN, 96/48 px crops; pinned below, the preset has since taken the probes' finding), stopped after 250 steps unless the overrides say
# otherwise (optim.max_steps=0 runs the 500), one change per probe; then k-NN top-1 of the
# checkpoint and its teacher statistics (benchmarks/teacher_collapse.py). Finished probes are
# skipped. Appends a line per probe to OUT/summary.txt.
#
#   bash benchmarks/recipe_probe.sh NAME [key=value ...]      # OUT=runs/probe by default
set -u
NAME=$1; shift
OUT=${OUT:-runs/probe}
PY=${PYTHON:-.venv/bin/python}
run=$OUT/$NAME
mkdir -p "$OUT"
[ -f "$run/knn.txt" ] && exit 0
start=$SECONDS
"$PY" -m selfpatch pretrain --config cpu-long method=dino optim.epochs=2 optim.max_steps=250 \
  dino.head_bn=false data.global_size=96 data.local_size=48 run.progress=false run.keep_every=0 "run.output_dir=$run" "$@" > "$run.log" 2>&1 \
  || { echo "$NAME | $* | FAILED (see $run.log)" >> "$OUT/summary.txt"; exit 1; }
seconds=$((SECONDS - start))
"$PY" -m selfpatch eval knn --checkpoint "$run/checkpoints/last.pt" > "$run.knn.log" 2>&1
knn=$(grep -o 'top-1 [0-9.]*' "$run.knn.log" | tail -1)
stats=$("$PY" benchmarks/teacher_collapse.py "$run/checkpoints/last.pt" 2>/dev/null | tail -1 \
  | sed 's/^[^:]*: //')
last=$(tail -1 "$run/metrics.jsonl" | grep -o '"image_loss": [0-9.]*\|"teacher_entropy": [0-9.]*' \
  | tr '\n' ' ')
echo "$knn" > "$run/knn.txt"
echo "$NAME | $* | ${seconds}s | $knn | $last| $stats" >> "$OUT/summary.txt"
