# Run from the repository root (2026-11-28, session 6). Columns of summary.log: settings | checkpoint | mIoU aAcc train-images seconds
for args in "--seg-epochs 10" "--seg-epochs 40" "--seg-image-size 96" "--seg-image-size 288"; do
for c in random:vit_tiny:16 runs/controls/supervised-vit.safetensors runs/repro/cpu-long-v2/dino-seed0 runs/repro/cpu-long-v2/selfpatch-seed0; do
  tag=$(echo "$c $args" | tr '/: ' '___')
  .venv/bin/selfpatch eval seg --checkpoint $c --threads 1 $args --out runs/probe-design/$tag > runs/probe-design/$tag.log 2>&1
  echo "$args | $c | $(python3 -c "import json;r=json.load(open('runs/probe-design/$tag/seg.json'));print(round(r['mIoU'],1), round(r['aAcc'],1), r['num_train'], round(r['seconds']))")"
done; done
