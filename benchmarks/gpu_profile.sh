#!/usr/bin/env bash
# Where the SelfPatch part of a GPU step goes (issue #11, item 5), in one device call of about
# 4 minutes: a torch.profiler breakdown of dino and dino+selfpatch steps (ViT-S/16, paper
# crops, batch 64, bf16) and their step times with and without torch.compile.
#
#   OUT=/tmp/prof bash benchmarks/gpu_profile.sh              # on the GPU machine
#   OUT=/tmp/prof PYTHON=.venv/bin/python bash benchmarks/gpu_profile.sh --smoke   # CPU test
#
# Compare the img/s lines with docs/gpu/ (709 img/s for dino+selfpatch bf16+compile on an
# H200, 2026-11-26) to see a change's effect; profile_*.txt and trace_*.json land in $OUT.
set -u -o pipefail
OUT=${OUT:-/tmp/selfpatch-gpu-profile}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "${1:-}" = "--smoke" ]; then
  PROF=(--smoke --modes fp32); STEP=(--device cpu --smoke --threads 1 --modes fp32 --no-flops)
else
  PROF=(--device cuda --batch-size 64 --arch vit_small --modes bf16)
  STEP=(--device cuda --batch-size 64 --settings paper --archs vit_small --modes bf16
        bf16+compile --no-flops --steps 10 --warmup 3)
fi
timeout 120 "$PY" benchmarks/step_profile.py "${PROF[@]}" --methods dino dino+selfpatch \
  --out "$OUT" 2>&1 | grep -v -e "^USDT" | tee "$OUT/profile.log"
timeout 150 "$PY" benchmarks/step_time.py "${STEP[@]}" --out "$OUT/step_time.json" 2>&1 \
  | grep -v -e "^USDT" | tee "$OUT/step_time.log"
