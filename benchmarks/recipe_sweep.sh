#!/usr/bin/env bash
# Recipe sweep on the built-in data v2 (issue 9): DINO with the cpu-long preset cut to a
# 500-step schedule (2 epochs of 8000 scenes, warm-up 1 epoch, cosine to the end), one key
# changed per variant, k-NN top-1 after each run. Finished variants are skipped. The recipe
# cpu-long had at the time (no head BN, 96/48 px crops) is pinned below.
#
#   bash benchmarks/recipe_sweep.sh [OUT]        # default OUT=runs/sweep; ~12 min per variant
#
# Writes OUT/summary.txt: variant | overrides | training seconds | k-NN top-1.
set -u
OUT=${1:-runs/sweep}
PY=${PYTHON:-.venv/bin/python}
KNN_TRAIN=$("$PY" -c "from selfpatch.data.builtin import BuiltinSpec, ensure_builtin; \
print(ensure_builtin(BuiltinSpec()).root / 'knn' / 'train')")
mkdir -p "$OUT"
run() {
  local name=$1; shift
  local out=$OUT/$name
  [ -f "$out/knn.txt" ] && return
  local start=$SECONDS
  "$PY" -m selfpatch pretrain --config cpu-long method=dino optim.epochs=2 run.progress=false \
    dino.head_bn=false data.global_size=96 data.local_size=48 \
    run.keep_every=0 "run.output_dir=$out" "$@" > "$out.log" 2>&1 \
    || { echo "$name FAILED (see $out.log)" >> "$OUT/summary.txt"; return; }
  local t=$((SECONDS - start))
  "$PY" -m selfpatch eval knn --checkpoint "$out/checkpoints/last.pt" > "$out.knn.log" 2>&1
  local k
  k=$(grep -o 'top-1 [0-9.]*' "$out.knn.log" | tail -1)
  echo "$k" > "$out/knn.txt"
  echo "$name | $* | train ${t}s | $k" >> "$OUT/summary.txt"
}
run base
run objc "data.path=$KNN_TRAIN" optim.epochs=3   # object-centric: the 5000 k-NN train images
run lr01 optim.base_lr=0.01
run od1k dino.out_dim=1024
run nll dino.norm_last_layer=false              # DINO's own choice for ViT-S (its README)
run p8 model.patch_size=8 data.global_size=64 data.local_size=32
