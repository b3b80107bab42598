#!/usr/bin/env bash
# Object-centric pre-training on the built-in data (issue 9): the paper pre-trains on ImageNet
# (one main object per image) and transfers to dense tasks; the built-in presets pre-train on
# multi-object scenes. This pre-trains DINO and DINO + SelfPatch with the `cpu-long` preset on
# N single-object images instead (the k-NN image renderer, Fashion-MNIST *train* photos, from a
# separate build with n_knn_train=N; evaluation sets use test photos), side by side with one
# thread each, then evaluates both next to random weights on the default v2 evaluation data.
#
#   bash benchmarks/object_centric.sh [SEED] [key=value ...]     # OUT=runs/objc, N=8000
#
# Extra key=value overrides go to both pre-training runs (e.g. optim.max_steps=2 for a smoke
# test). A run whose OUT/NAME.status says `done` (written when pre-training exits 0) and whose
# checkpoints/last.pt exists is not redone; the evaluation always runs.
set -eu
SEED=${1:-0}; shift || true
OUT=${OUT:-runs/objc}
N=${N:-8000}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

# The object-centric pre-training images: a build whose only non-default size is n_knn_train.
"$PY" -m selfpatch data build --root "$OUT/data" --n-knn-train "$N" --quiet > "$OUT/data.log"
objects=$(ls -d "$OUT"/data/fashion-scenes-v2-seed0*/knn/train | head -1)

pids=()
for method in dino dino+selfpatch; do
  name=$([ "$method" = dino ] && echo dino || echo selfpatch)-seed$SEED
  [ -f "$OUT/$name/checkpoints/last.pt" ] && grep -q "^done" "$OUT/$name.status" 2>/dev/null && continue
  ( "$PY" -m selfpatch pretrain --config cpu-long "method=$method" "data.path=$objects" \
      "run.seed=$SEED" run.precision=fp32 run.threads=1 "run.output_dir=$OUT/$name" "$@" \
      > "$OUT/$name.log" 2>&1 && echo done > "$OUT/$name.status" ) &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
for name in dino selfpatch; do
  grep -q "^done" "$OUT/$name-seed$SEED.status" || { echo "pre-training $name failed: $OUT/$name-seed$SEED.log" >&2; exit 1; }
done

# Evaluation on the default v2 build (not the object-centric one), random weights beside.
"$PY" -m selfpatch eval all --threads 2 --out "$OUT/eval-seed$SEED" \
  --checkpoint "$OUT/dino-seed$SEED/checkpoints/last.pt" \
  --checkpoint "$OUT/selfpatch-seed$SEED/checkpoints/last.pt" \
  --checkpoint random:vit_tiny:16
echo "report: $OUT/eval-seed$SEED/report.md"
