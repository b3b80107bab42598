#!/usr/bin/env bash
# Object-centric pre-training on the built-in data (issue 9): the paper pre-trains on ImageNet
# (one main object per image) and transfers to dense tasks; the built-in presets pre-train on
# multi-object scenes. This pre-trains DINO and DINO + SelfPatch with the `cpu-long` preset on
# N single-object images instead (the k-NN image renderer, Fashion-MNIST *train* photos, from a
# separate build with n_knn_train=N; evaluation sets use test photos), then evaluates both next
# to random weights on the default v2 evaluation data.
#
#   bash benchmarks/object_centric.sh [SEED ...] [key=value ...]     # OUT=runs/objc, N=8000
#
# The grid itself is `benchmarks/reproduce.py --grid compare` with a `data.path=` override:
# two runs at once with one thread each, finished runs skipped, interrupted ones resumed, the
# table in OUT/summary.md. Extra key=value overrides go to every run (e.g. optim.max_steps=2
# for a smoke test).
set -eu
seeds=(); overrides=()
for arg in "$@"; do
  case "$arg" in *=*) overrides+=("$arg") ;; *) seeds+=("$arg") ;; esac
done
[ ${#seeds[@]} -gt 0 ] || seeds=(0)
OUT=${OUT:-runs/objc}
N=${N:-8000}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

# The object-centric pre-training images: a build whose only non-default size is n_knn_train.
"$PY" -m selfpatch data build --root "$OUT/data" --n-knn-train "$N" --quiet > "$OUT/data.log"
objects=$(cd "$(ls -d "$OUT"/data/fashion-scenes-v2-seed0*/knn/train | head -1)" && pwd)

"$PY" benchmarks/reproduce.py --preset cpu-long --grid compare --seeds "${seeds[@]}" --jobs 2 \
  --out "$OUT" --eval-args "--threads 2" \
  "data.path=$objects" run.precision=fp32 ${overrides[@]+"${overrides[@]}"}
