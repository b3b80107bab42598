"""DINO vs DINO + SelfPatch, same budget, several seeds: pre-train, evaluate, summarise.

    python benchmarks/compare_methods.py --seeds 0 1 2 --out runs/compare [key=value ...]

Each (method, seed) pair is pre-trained with the same preset and overrides (only ``method`` and
``run.seed`` differ), then every checkpoint, plus a random-weight baseline of the same
architecture, is evaluated by one ``selfpatch eval all`` call (one side-by-side report). The
summary (``summary.md`` / ``summary.json`` in ``--out``) gives per-seed values, mean and
standard deviation per method, the SelfPatch - DINO difference per seed, and the budget
(steps, images seen, wall time). Finished runs are reused, unfinished ones resumed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("dino", "dino+selfpatch")
METRICS = ("J&F", "J", "F", "mIoU", "aAcc", "mAcc", "knn_top1", "knn_top5")


def selfpatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "selfpatch", *args]


def pretrain(run_dir: Path, preset: str, method: str, seed: int, overrides: list[str]) -> dict:
    """Train one run unless it already finished; return its budget facts."""
    ckpt = run_dir / "checkpoints" / "last.pt"
    env_path = run_dir / "environment.json"
    done = run_dir / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    cmd = selfpatch_cmd("pretrain", "--config", preset, f"method={method}", f"run.seed={seed}",
                        f"run.output_dir={run_dir}", "run.progress=false", *overrides)
    if ckpt.exists():
        cmd.append("--resume")
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    env = json.loads(env_path.read_text())
    facts = {"seconds": round(time.perf_counter() - start, 1), "steps": env["total_steps"],
             "images_seen": env["total_steps"] * env["total_batch"], "n_images": env["n_images"],
             "device": env["device"], "torch": env["torch"]}
    done.write_text(json.dumps(facts))
    return facts


def summarise(report: dict, runs: dict[str, tuple[str, int]], budget: dict) -> dict:
    """Per-method statistics from the evaluation report."""
    by_source = {e["source"]: e["metrics"] for e in report["checkpoints"]}
    table: dict = {m: {k: [] for k in METRICS} for m in METHODS}
    for source, (method, _seed) in runs.items():
        for k in METRICS:
            if k in by_source[source]:
                table[method][k].append(by_source[source][k])
    summary: dict = {"per_seed": table, "mean": {}, "std": {}, "budget": budget}
    for m in METHODS:
        summary["mean"][m] = {k: statistics.fmean(v) for k, v in table[m].items() if v}
        summary["std"][m] = {k: statistics.stdev(v) if len(v) > 1 else 0.0
                             for k, v in table[m].items() if v}
    summary["difference_per_seed"] = {
        k: [b - a for a, b in zip(table["dino"][k], table["dino+selfpatch"][k])] for k in METRICS}
    random_rows = [e["metrics"] for e in report["checkpoints"] if e["source"].startswith("random:")]
    summary["random"] = random_rows[0] if random_rows else {}
    return summary


def render(summary: dict, seeds: list[int], preset: str, overrides: list[str]) -> str:
    lines = [f"# DINO vs DINO + SelfPatch ({preset}, seeds {seeds})", "",
             f"Overrides: `{' '.join(overrides) or '(none)'}`", "",
             "| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for m in METHODS:
        mean, std = summary["mean"][m], summary["std"][m]
        cells = [f"{mean.get(k, float('nan')):.1f} ± {std.get(k, 0):.1f}" for k in METRICS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if summary["random"]:
        lines.append("| random weights | " + " | ".join(
            f"{summary['random'].get(k, float('nan')):.1f}" for k in METRICS) + " |")
    lines += ["", "Mean ± sample standard deviation over seeds. Per seed (SelfPatch − DINO):", ""]
    for k in METRICS:
        diffs = ", ".join(f"{d:+.1f}" for d in summary["difference_per_seed"][k])
        lines.append(f"- {k}: {diffs}")
    lines += ["", "Budget per run:", ""]
    for name, facts in summary["budget"].items():
        lines.append(f"- {name}: {facts['steps']} steps, {facts['images_seen']} images seen "
                     f"({facts['n_images']} distinct), {facts['seconds']} s on {facts['device']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--preset", default="cpu-quick")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--eval-args", default="", help="extra `selfpatch eval all` arguments")
    parser.add_argument("overrides", nargs="*", help="key=value for both methods")
    args = parser.parse_args(argv)
    out = Path(args.out)
    runs: dict[str, tuple[str, int]] = {}
    budget = {}
    for seed in args.seeds:
        for method in METHODS:
            run_dir = out / f"{method.replace('+', '-')}-seed{seed}"
            budget[run_dir.name] = pretrain(run_dir, args.preset, method, seed, args.overrides)
            runs[str(run_dir)] = (method, seed)
    first = next(iter(runs))
    import torch  # only to read the architecture from a checkpoint

    ckpt = torch.load(Path(first) / "checkpoints" / "last.pt", map_location="cpu",
                      weights_only=True)
    arch = ckpt["config"]["model"]["arch"]
    patch = ckpt["config"]["model"]["patch_size"]
    eval_out = out / "eval"
    cmd = selfpatch_cmd("eval", "all", "--out", str(eval_out), *args.eval_args.split())
    for source in [*runs, f"random:{arch}:{patch}"]:
        cmd += ["--checkpoint", source]
    subprocess.run(cmd, check=True)
    report = json.loads((eval_out / "report.json").read_text())
    summary = summarise(report, runs, budget)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    text = render(summary, args.seeds, args.preset, args.overrides)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"summary: {out / 'summary.md'}   full report: {eval_out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
