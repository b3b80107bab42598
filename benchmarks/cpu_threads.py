"""CPU thread count vs speed, on an idle and on a busy machine: the basis of ``threads=0``.

Times, for each torch thread count, (a) the cpu-quick training step (fp32 unless
``--precision``; the trainer's step as in ``step_time.py``) and (b) an evaluation-style
feature extraction (ViT-Ti/16, batches of 32 images of 128 px, as the built-in k-NN).
"Busy" runs ``--hogs`` extra processes that each keep one core 100 % busy, as another job on
a shared machine would. Each measurement runs in a fresh subprocess (torch's thread pool is
sized once per process). Usage, from the repository root::

    python benchmarks/cpu_threads.py --threads 1 2 --hogs 0 1 \\
        --out docs/results/cpu-2026-11-28/threads_avx2.json

``--jobs N`` adds the question a grid of runs asks (``benchmarks/reproduce.py --jobs``): is
one process on N threads or N processes on 1 thread each the faster way through many runs?
Both are timed side by side on the training step of ``--preset``; throughput is steps per
second summed over the processes, which run at the same time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_io import write_result  # benchmarks/ is on sys.path when run as a script

from selfpatch.runtime import cpu_name

HERE = Path(__file__).resolve().parent


def _hog() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def measure(task: str, threads: int, precision: str, reps: int, preset: str = "cpu-quick"
            ) -> dict:
    """Run in a child: median seconds of ``reps`` repetitions of ``task``."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    if task == "train-step":
        from step_time import build_variant, train_step

        v = build_variant(preset, "vit_tiny", "dino+selfpatch", precision, 32,
                          torch.device("cpu"), smoke=False)
        run = lambda: train_step(v)  # noqa: E731
        work = f"{preset} dino+selfpatch step, batch 32"
    else:
        from selfpatch.models.loading import load_backbone
        from selfpatch.runtime import PrecisionChoice

        backbone = load_backbone("random:vit_tiny:16")
        images = torch.randn(32, 3, 128, 128, generator=torch.Generator().manual_seed(0))
        amp = PrecisionChoice(precision, precision, "benchmark").autocast("cpu")

        def run() -> None:
            with torch.inference_mode(), amp:
                backbone(images)
        work = "ViT-Ti/16 features of 32 images at 128 px"
    run()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"task": task, "work": work, "threads": threads, "precision": precision,
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--hogs", type=int, nargs="+", default=[0, 1],
                        help="busy processes running alongside (0 = idle machine)")
    parser.add_argument("--tasks", nargs="+", default=["train-step", "features"],
                        choices=["train-step", "features"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--preset", default="cpu-quick", choices=["cpu-quick", "cpu-long"],
                        help="whose training step (crop sizes) to time")
    parser.add_argument("--jobs", type=int, default=0,
                        help="also compare 1 process x N threads with N processes x 1 thread")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        task, threads = args.child.split(":")
        print(json.dumps(measure(task, int(threads), args.precision, args.reps, args.preset)))
        return

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the selfpatch command sets it

    def child(task: str, threads: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, __file__, "--child", f"{task}:{threads}", "--precision",
             args.precision, "--reps", str(args.reps), "--preset", args.preset],
            stdout=subprocess.PIPE, text=True)

    def collect(proc: subprocess.Popen) -> dict:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a measurement child failed (exit {proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])

    concurrent = []
    if args.jobs > 1:  # before the other rows, on an idle machine
        one = collect(child("train-step", args.jobs))
        many = [collect(p) for p in [child("train-step", 1) for _ in range(args.jobs)]]
        rate_one = 1 / one["median_s"]
        rate_many = sum(1 / r["median_s"] for r in many)
        concurrent = [{"layout": f"1 process x {args.jobs} threads", "steps_per_s": rate_one,
                       "median_s": [one["median_s"]]},
                      {"layout": f"{args.jobs} processes x 1 thread", "steps_per_s": rate_many,
                       "median_s": [r["median_s"] for r in many]}]
        print(f"{args.preset} training step: 1 process x {args.jobs} threads "
              f"{rate_one:.3f} steps/s; {args.jobs} processes x 1 thread {rate_many:.3f} "
              f"steps/s in all: {rate_many / rate_one:.2f}x", flush=True)
    rows = []
    for hogs in args.hogs:
        procs = [mp.Process(target=_hog, daemon=True) for _ in range(hogs)]
        for p in procs:
            p.start()
        try:
            for task in args.tasks:
                for threads in args.threads:
                    row = collect(child(task, threads)) | {"hogs": hogs}
                    rows.append(row)
                    print(f"hogs {hogs}  {task:10s} threads {threads}: median "
                          f"{row['median_s']:.3f} s (min {row['min_s']:.3f}, max "
                          f"{row['max_s']:.3f})", flush=True)
        finally:
            for p in procs:
                p.terminate()
    result = {"cpu": cpu_name(), "cores": os.cpu_count(),
              "env": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "ONEDNN_MAX_CPU_ISA",
                                                 "ATEN_CPU_CAPABILITY",
                                                 "MKL_ENABLE_INSTRUCTIONS") if k in os.environ},
              "preset": args.preset, "rows": rows, "concurrent": concurrent}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
