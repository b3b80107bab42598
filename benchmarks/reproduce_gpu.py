"""DINO vs DINO+SelfPatch, 2 seeds each, on the built-in data, inside one GPU call of fixed length.

    python benchmarks/reproduce_gpu.py --minutes 9 --out "$OUT"     # on the GPU machine
    python benchmarks/reproduce_gpu.py --smoke --out /tmp/rg         # every code path, on CPU

The budget is sized by measurement, not by guess: after building the built-in data, each
method trains ``--probe-steps`` steps of the ``builtin-gpu`` preset (bf16 where the device
has it, augmentations on the device) and its images/s is read from the run's metrics. The
time left, minus a reserve for the evaluation, is split so that all four runs (2 methods x 2
seeds) get the same number of *steps* (whole epochs of the 20 000 scenes). Then
``benchmarks/reproduce.py --grid compare`` trains and evaluates them next to random weights.
Writes ``OUT/reproduce_gpu.json`` (device, calibration, chosen budget, timings, the summary)
and ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402

PRESET = "builtin-gpu"
SMOKE = ["data.builtin_n_pretrain=64", "data.limit_images=64", "optim.batch_size=8",
         "data.global_size=32", "data.local_size=16", "model.patch_size=8", "data.n_local=2",
         "dino.out_dim=128", "dino.hidden_dim=64", "selfpatch.out_dim=64",
         "data.num_workers=0", "data.gpu_augment=false", "run.threads=1"]
SMOKE_EVAL = ("--tasks knn --knn-image-size 32 --train-limit 8 --val-limit 8 --threads 1 "
              "--batch-size 8")


def images_per_second(run: Path) -> float:
    """Median images/s of a run's metric lines after the first (warm-up, compilation)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in rows[1:]] or [r["img_per_s"] for r in rows]
    return statistics.median(rates)


def calibrate(out: Path, steps: int, extra: list[str]) -> dict[str, float]:
    """Images/s of each method at the preset's settings, from a short real run."""
    rates = {}
    for variant in ("dino", "selfpatch"):
        run = out / f"probe-{variant}"
        cmd = reproduce.selfpatch_cmd(
            "pretrain", "--config", PRESET, *reproduce.VARIANTS[variant], *extra,
            f"optim.max_steps={steps}", f"run.log_every={max(steps // 4, 1)}",
            f"run.output_dir={run}", "run.progress=false", "run.keep_every=0")
        subprocess.run(cmd, check=True)
        rates[variant] = images_per_second(run)
    return rates


def plan(seconds: float, rates: dict[str, float], n_images: int, seeds: int) -> int:
    """Whole epochs per run so that ``seeds`` runs of each method (images/s in ``rates``) fit
    in ``seconds``; at least 1."""
    per_epoch = sum(n_images / r for r in rates.values()) * seeds  # both methods, all seeds
    return max(1, int(seconds // per_epoch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=9.0, help="the whole call's length")
    parser.add_argument("--eval-reserve", type=float, default=150.0,
                        help="seconds kept for the evaluation of 5 checkpoints")
    parser.add_argument("--run-overhead", type=float, default=20.0,
                        help="seconds per run for start-up and checkpoint writes")
    parser.add_argument("--probe-steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce-gpu"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    extra = SMOKE if args.smoke else []
    eval_args = SMOKE_EVAL if args.smoke else ""
    args.out.mkdir(parents=True, exist_ok=True)

    import torch

    from selfpatch.config import load_config
    from selfpatch.data.builtin import BuiltinSpec, ensure_builtin

    cfg = load_config(PRESET, extra)
    ensure_builtin(BuiltinSpec.for_version(cfg.data.builtin_version,
                                           n_pretrain=cfg.data.builtin_n_pretrain))
    built = time.perf_counter() - start
    probe_steps = 4 if args.smoke else args.probe_steps
    rates = calibrate(args.out / "probes", probe_steps, extra)
    calibrated = time.perf_counter() - start
    n_images = cfg.data.limit_images or cfg.data.builtin_n_pretrain
    seeds = 2
    left = args.minutes * 60 - calibrated - args.eval_reserve - 2 * seeds * args.run_overhead
    epochs = plan(left, rates, n_images, seeds)
    overrides = [*extra, f"optim.epochs={epochs}",
                 f"optim.warmup_epochs={max(1, round(epochs / 10))}",
                 f"dino.warmup_teacher_temp_epochs={max(1, round(epochs / 10))}",
                 "run.keep_every=0"]
    reproduce.main(["--preset", PRESET, "--grid", "compare", "--seeds", "0", "1",
                    "--out", str(args.out / "grid"), "--eval-args", eval_args, *overrides])
    summary = json.loads((args.out / "grid" / "summary.json").read_text())
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    result = {"device": device, "torch": torch.__version__, "minutes_allowed": args.minutes,
              "seconds_data_build": round(built, 1),
              "seconds_calibration": round(calibrated - built, 1),
              "images_per_second": rates, "epochs": epochs,
              "steps_per_run": epochs * (n_images // cfg.optim.batch_size),
              "overrides": overrides, "seconds_total": round(time.perf_counter() - start, 1),
              "summary": summary}
    (args.out / "reproduce_gpu.json").write_text(json.dumps(result, indent=2))
    (args.out / "summary.md").write_text((args.out / "grid" / "summary.md").read_text())
    print(f"{device}: {epochs} epochs per run, {result['seconds_total']} s in all; "
          f"results: {args.out / 'reproduce_gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
