#!/usr/bin/env bash
# One prepared GPU check for selfpatch (meant for one H100, about 5 minutes).
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --smoke   # every code path, on CPU
#
# Sections (each under its own time limit; one failing does not stop the others):
#   1. trainer on CUDA: `python -m selfpatch pretrain` for a few steps with bf16 +
#      data.gpu_augment, fp16 (GradScaler) and a 3-step run resumed to 6 steps;
#   2. step time / memory / FLOPs, paper setting (ViT-S/16, 2x224 + 8x96 crops), batch 64,
#      dino vs dino+selfpatch, fp32 vs bf16 vs fp16, plus loader images/s with 16 workers;
#   3. bf16 + torch.compile vs bf16 eager in the same process, dino+selfpatch then dino (one
#      process each, so a slow compilation costs at most its own section), last because
#      compilation time is the least predictable.
# Writes $OUT/gpu_check.log (everything), $OUT/trainer_smoke.json, $OUT/step_eager.json,
# $OUT/step_compile_selfpatch.json and $OUT/step_compile_dino.json. Needs torch, torchvision, timm, safetensors, pyyaml, tqdm, pillow
# (all in the device image); the package itself comes from ./src via PYTHONPATH.
set -u -o pipefail

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
OUT=${OUT:-/tmp/selfpatch-gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/gpu_check.log"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATUS=()

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu; BATCH=4; WORKERS=2
  export OMP_NUM_THREADS=1  # OpenMP threads stall badly on a shared 2-core box
  STEP_ARGS=(--smoke --threads 1)
  COMPILE_ARGS=(--compile-backend eager)  # traces with dynamo, skips inductor's codegen
  T1=300; T2=300; T3=300; T4=300
else
  DEVICE=cuda; BATCH=64; WORKERS=16
  STEP_ARGS=(--steps 10 --warmup 2)
  COMPILE_ARGS=(--warmup 3)
  T1=60; T2=110; T3=100; T4=80  # limits: under 6 minutes in all; about 4 expected
fi

section() {  # section NAME SECONDS CMD...: run with a time limit, log, record the outcome
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -e "^USDT" -e "CPUAllocator.cpp" | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  STATUS+=("$name: rc=$rc in $((SECONDS - start))s")
  echo "=== $name: rc=$rc in $((SECONDS - start))s" | tee -a "$LOG"
}

{
  echo "gpu_check started $(date -u +%FT%TZ) smoke=$SMOKE"
  uname -a
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 \
    || echo "(no nvidia-smi)"
  echo "cpu cores: $(nproc)"
  "$PY" - <<'PY'
import importlib
for name in ("torch", "torchvision", "timm", "safetensors", "yaml", "tqdm", "PIL", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(name, "MISSING", exc)
import torch
print("cuda available:", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
import selfpatch
print("selfpatch from", selfpatch.__file__)
PY
} 2>&1 | tee -a "$LOG"

# ---------------------------------------------------------------- 1. trainer on the device
# (a file, not a shell function: `timeout` runs programs only)
cat > "$WORK/trainer_smoke.py" <<'PY'
import json, math, sys, time
from pathlib import Path

import numpy as np
from PIL import Image

from selfpatch.config import load_config
from selfpatch.train.trainer import pretrain

work, device, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
images = work / "images"
images.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for i in range(64):
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
base = ["model.arch=vit_tiny", "model.patch_size=16", "data.global_size=64",
        "data.local_size=32", "data.n_local=2", "data.num_workers=2", "dino.out_dim=1024",
        "dino.hidden_dim=256", "selfpatch.out_dim=256", "optim.batch_size=16",
        "optim.epochs=2", "run.progress=false", "run.log_every=1", f"run.device={device}",
        f"data.path={images}"]  # 64 images / batch 16 = 4 steps per epoch: 8 steps
results = {}

def run(name, *extra, resume=False, out_name=None):
    start = time.perf_counter()
    cfg = load_config("cpu-quick", base + [f"run.output_dir={work / (out_name or name)}", *extra])
    run_dir = pretrain(cfg, resume=resume)
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    results[name] = {"seconds": round(time.perf_counter() - start, 1),
                     "losses": [r["loss"] for r in rows],
                     "finite": all(math.isfinite(r["loss"]) for r in rows),
                     "img_per_s_last": rows[-1]["img_per_s"],
                     "max_mem_gb": rows[-1].get("max_mem_gb")}
    print(name, results[name], flush=True)

run("bf16_gpu_augment", "run.precision=bf16", "data.gpu_augment=true")
run("fp16_scaler", "run.precision=fp16")
run("full", "run.precision=bf16", "model.drop_path=0")
run("part_3_steps", "run.precision=bf16", "model.drop_path=0", "optim.max_steps=3",
    out_name="part")
run("resumed", "run.precision=bf16", "model.drop_path=0", resume=True, out_name="part")
full, resumed = results["full"]["losses"], results["resumed"]["losses"]
# CUDA kernels (atomics in backward) need not be bit-exact: report the largest difference.
results["resume_max_loss_diff"] = max(abs(a - b) for a, b in zip(full, resumed))
out.write_text(json.dumps(results, indent=2))
ok = all(r["finite"] for r in results.values() if isinstance(r, dict))
print("trainer smoke:", "OK" if ok else "NON-FINITE LOSS", "resume max loss diff",
      results["resume_max_loss_diff"])
sys.exit(0 if ok else 1)
PY
section trainer "$T1" "$PY" "$WORK/trainer_smoke.py" "$WORK" "$DEVICE" "$OUT/trainer_smoke.json"

# ---------------------------------------------------------------- 2. eager step time + loader
section step_eager "$T2" "$PY" benchmarks/step_time.py --device "$DEVICE" \
  --batch-size "$BATCH" --settings paper --archs vit_small --modes fp32 bf16 fp16 \
  --loader --loader-workers "$WORKERS" "${STEP_ARGS[@]}" --out "$OUT/step_eager.json"

# ---------------------------------------------------------------- 3. bf16 + torch.compile
section compile_selfpatch "$T3" "$PY" benchmarks/step_time.py --device "$DEVICE" \
  --batch-size "$BATCH" --settings paper --archs vit_small --methods dino+selfpatch \
  --modes bf16 bf16+compile --no-flops "${STEP_ARGS[@]}" "${COMPILE_ARGS[@]}" \
  --out "$OUT/step_compile_selfpatch.json"
section compile_dino "$T4" "$PY" benchmarks/step_time.py --device "$DEVICE" \
  --batch-size "$BATCH" --settings paper --archs vit_small --methods dino \
  --modes bf16 bf16+compile --no-flops "${STEP_ARGS[@]}" "${COMPILE_ARGS[@]}" \
  --out "$OUT/step_compile_dino.json"

{
  echo "gpu_check finished $(date -u +%FT%TZ)"
  printf '%s\n' "${STATUS[@]}"
} | tee -a "$LOG"
