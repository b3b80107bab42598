"""The paper's comparisons as a grid of runs: pre-train each variant x seed, evaluate all in one
``selfpatch eval all`` call, tabulate mean ± std over seeds and per-seed differences to DINO.

    # DINO vs DINO+SelfPatch (paper Tab. 3/6), 3 seeds at the cpu-long budget
    python benchmarks/reproduce.py --preset cpu-long --grid compare --seeds 0 1 2 \\
        --out runs/reproduce/cpu-long
    # the ablations of Tab. 4, one seed, at a budget of your choice
    python benchmarks/reproduce.py --preset cpu-quick --grid ablations --seeds 0 \\
        --out runs/reproduce/ablations-quick
    # real data (COCO pre-training as Tab. 4/6, DAVIS/ADE20K evaluation), 4 GPUs per run
    python benchmarks/reproduce.py --preset coco-ablation-vit-ti16 --grid ablations --seeds 0 \\
        --out runs/reproduce/coco --launcher "torchrun --nproc_per_node 4" \\
        --eval-args "--data-root /data" data.path=/data/coco/train2017

Variants differ from the preset in one key each (``dino`` and ``selfpatch`` also set
``method``); ``--variants`` picks a subset. Each run lives in ``OUT/<variant>-seed<s>``:
a finished one (``done.json``) is skipped, an interrupted one (a checkpoint without
``done.json``) is resumed with ``--resume``, so a grid can be finished over several sittings.
The evaluation runs once all runs are done, together with random weights of the same
architecture (negative control) and any ``--control`` sources (e.g. the supervised ViT that
``benchmarks/controls.py`` exports: positive control), and is reused while its set of
checkpoints is unchanged. Writes ``OUT/summary.md`` and ``OUT/summary.json``.

``--jobs N`` pre-trains N runs at once, each with ``run.threads`` = usable cores / N (unless
``run.threads`` is given) and its output in ``OUT/<run>.log``. On small CPU models this beats
one run on all cores: torch's per-operator threading scales poorly on such small tensors
(docs/performance.md, "A grid on a small CPU").

Trailing ``key=value`` overrides apply to every run (e.g. ``optim.epochs=2``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

# Run from a checkout without installing (e.g. on a borrowed GPU machine): this repository's
# src/ first, for this process and the `python -m selfpatch` runs it starts.
SRC = Path(__file__).resolve().parents[1] / "src"
if (SRC / "selfpatch").is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])

METRICS = ("J&F", "J", "F", "mIoU", "aAcc", "mAcc", "knn_top1", "knn_top5")
SHOWN = ("J&F", "mIoU", "knn_top1")  # the columns of the markdown table; the JSON has all

# variant -> overrides, each differing from `selfpatch` (paper defaults) in one key.
VARIANTS: dict[str, list[str]] = {
    "dino": ["method=dino"],
    "selfpatch": ["method=dino+selfpatch"],
    "neighbourhood-all": ["method=dino+selfpatch", "selfpatch.neighbourhood=all"],
    "neighbourhood-5x5": ["method=dino+selfpatch", "selfpatch.neighbourhood=5x5"],
    "aggregation-mean": ["method=dino+selfpatch", "selfpatch.aggregation=mean"],
    "lambda-0": ["method=dino+selfpatch", "selfpatch.loss_weight=0"],
    "lambda-1": ["method=dino+selfpatch", "selfpatch.loss_weight=1"],
    "k-1": ["method=dino+selfpatch", "selfpatch.k=1"],
    "k-8": ["method=dino+selfpatch", "selfpatch.k=8"],
    "border-wrap": ["method=dino+selfpatch", "selfpatch.border=wrap"],
    "border-valid": ["method=dino+selfpatch", "selfpatch.border=valid"],
}
GRIDS = {
    "compare": ["dino", "selfpatch"],
    "ablations": ["dino", "selfpatch", "neighbourhood-all", "neighbourhood-5x5",
                  "aggregation-mean", "lambda-0", "lambda-1", "k-1", "k-8", "border-wrap",
                  "border-valid"],  # one border equals `selfpatch`: run once (same_as)
}
# What the paper measured for each comparison (DAVIS J&F), for the reader of the table.
PAPER = {
    "dino": "Tab. 3 ViT-S/16 ImageNet 60.7; Tab. 6 ViT-Ti/16 COCO 55.1",
    "selfpatch": "Tab. 3 62.7; Tab. 6 57.0 (Tab. 4 default: 3x3, attention, λ 0.1, k 4)",
    "neighbourhood-all": "Tab. 4 all patches 47.3",
    "aggregation-mean": "Tab. 4 no aggregation 51.4",
    "neighbourhood-5x5": "Tab. 4 5x5: 56.5",
    "lambda-0": "Tab. 6 λ = 0: 55.3",
    "lambda-1": "Tab. 6 λ = 1: 56.4",
    "k-1": "Tab. 4 k = 1: 56.3",
    "k-8": "Tab. 4 k = 8: 56.5",
}

Runner = Callable[[list[str]], None]


def selfpatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "selfpatch", *args]


def duplicates(preset: str, variants: list[str], overrides: list[str]) -> dict[str, str]:
    """Variants whose resolved config equals an earlier variant's (e.g. ``border-valid`` when
    the preset already uses valid borders): variant -> the earlier one."""
    from selfpatch.config import load_config

    seen: dict[str, str] = {}
    same: dict[str, str] = {}
    for v in variants:
        key = json.dumps(load_config(preset, [*VARIANTS[v], *overrides]).to_dict(),
                         sort_keys=True)
        if key in seen:
            same[v] = seen[key]
        else:
            seen[key] = v
    return same


def run_subprocess(cmd: list[str], log: Path | None = None) -> None:
    """Run ``cmd``; its output goes to ``log`` (appended) when given, else to this terminal."""
    if log is None:
        subprocess.run(cmd, check=True)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"{cmd[3] if len(cmd) > 3 else cmd[0]} failed (exit "
                         f"{result.returncode}); see {log}")


def steps_trained(run_dir: Path, schedule_steps: int) -> int:
    """Steps a finished run trained: its schedule, cut short by ``optim.max_steps`` when that
    was set (the schedule, and so ``environment.json``'s ``total_steps``, ignores it)."""
    config = run_dir / "config.yaml"
    if not config.exists():
        return schedule_steps
    import yaml

    max_steps = (yaml.safe_load(config.read_text()).get("optim") or {}).get("max_steps") or 0
    return min(schedule_steps, max_steps) if max_steps > 0 else schedule_steps


def pretrain(run_dir: Path, preset: str, variant: str, seed: int, overrides: list[str],
             runner: Runner = run_subprocess, launcher: str = "", log: Path | None = None
             ) -> dict:
    """Train one (variant, seed) unless finished; resume it if a checkpoint exists.

    ``log``: where the run's output goes (passed to ``runner`` as ``log=``); None: the
    terminal. Returns the run's budget facts (also kept in ``run_dir/done.json``).
    """
    done = run_dir / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    cmd = selfpatch_cmd("pretrain", "--config", preset, *VARIANTS[variant], *overrides,
                        f"run.seed={seed}", f"run.output_dir={run_dir}", "run.progress=false")
    if launcher:  # e.g. "torchrun --nproc_per_node 4": one run over several GPUs
        cmd = [*shlex.split(launcher), *cmd[1:]]
    resumed = (run_dir / "checkpoints" / "last.pt").exists()
    if resumed:
        cmd.append("--resume")
    start = time.perf_counter()
    if log is None:
        runner(cmd)
    else:
        print(f"{run_dir.name}: {'resuming' if resumed else 'starting'}; output in {log}",
              flush=True)
        runner(cmd, log=log)
    env = json.loads((run_dir / "environment.json").read_text())
    steps = steps_trained(run_dir, env["total_steps"])
    facts = {"variant": variant, "seed": seed, "seconds_last_sitting":
             round(time.perf_counter() - start, 1), "resumed": resumed,
             "steps": steps, "images_seen": steps * env["total_batch"],
             "schedule_steps": env["total_steps"],
             "n_images": env["n_images"], "device": env["device"], "cpu": env.get("cpu"),
             "precision": env.get("precision", {}).get("name"), "torch": env["torch"]}
    done.write_text(json.dumps(facts, indent=2))
    return facts


def evaluate(sources: list[str], out: Path, eval_args: list[str],
             runner: Runner = run_subprocess) -> dict:
    """One ``selfpatch eval all`` over ``sources``; reused while the sources are the same, and
    with ``--reuse`` only the sources not yet in ``out/report.json`` are evaluated."""
    report_path = out / "report.json"
    sources_path = out / "sources.json"
    if report_path.exists() and sources_path.exists() and \
            json.loads(sources_path.read_text()) == {"sources": sources, "args": eval_args}:
        return json.loads(report_path.read_text())
    # --reuse: sources scored in an earlier sitting (unchanged files) are not scored again
    cmd = selfpatch_cmd("eval", "all", "--out", str(out), "--reuse", *eval_args)
    for source in sources:
        cmd += ["--checkpoint", source]
    runner(cmd)
    sources_path.write_text(json.dumps({"sources": sources, "args": eval_args}))
    return json.loads(report_path.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value, NaN for none)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(metrics: dict[str, dict[str, float]], runs: dict[str, tuple[str, int]],
              controls: dict[str, str]) -> dict:
    """Per-variant statistics.

    Args:
        metrics: source -> ``{metric: value}`` (from the evaluation report).
        runs: source -> ``(variant, seed)`` for the pre-trained runs.
        controls: source -> label for the control rows (random weights, supervised).

    Returns ``{"variants": {v: {"per_seed": {metric: {seed: x}}, "mean", "std",
    "minus_dino": {metric: {"per_seed": {seed: d}, "mean", "std"}}}}, "controls": {...}}``;
    differences pair each seed with DINO's run of the same seed.
    """
    per_seed: dict[str, dict[str, dict[int, float]]] = {}
    for source, (variant, seed) in runs.items():
        row = per_seed.setdefault(variant, {k: {} for k in METRICS})
        for k in METRICS:
            if k in metrics.get(source, {}):
                row[k][seed] = metrics[source][k]
    out: dict = {"variants": {}, "controls": {label: metrics.get(source, {})
                                              for source, label in controls.items()}}
    dino = per_seed.get("dino")
    for variant, row in per_seed.items():
        entry: dict = {"per_seed": row, "mean": {}, "std": {}, "minus_dino": {}}
        for k, by_seed in row.items():
            if not by_seed:
                continue
            entry["mean"][k], entry["std"][k] = mean_std(list(by_seed.values()))
            if dino is not None and variant != "dino":
                diffs = {s: x - dino[k][s] for s, x in by_seed.items() if s in dino[k]}
                m, sd = mean_std(list(diffs.values()))
                entry["minus_dino"][k] = {"per_seed": diffs, "mean": m, "std": sd}
        out["variants"][variant] = entry
    return out


def render(summary: dict, title: str, budget: dict[str, dict], command: str) -> str:
    """The markdown table (J&F, mIoU, k-NN top-1) with differences to DINO and the budget."""
    head = "| variant | seeds | " + " | ".join(
        f"{k} | Δ {k} vs DINO" for k in SHOWN) + " | paper |"
    lines = [f"# {title}", "", f"Command: `{command}`", "", head,
             "|---" * (2 + 2 * len(SHOWN) + 1) + "|"]
    for variant, entry in summary["variants"].items():
        seeds = sorted({s for by_seed in entry["per_seed"].values() for s in by_seed})
        cells = []
        for k in SHOWN:
            if k not in entry["mean"]:  # not evaluated (e.g. --eval-args "--tasks knn")
                cells += ["—", "—"]
                continue
            cells.append(f"{entry['mean'][k]:.1f} ± {entry['std'][k]:.1f}")
            d = entry["minus_dino"].get(k)
            cells.append("—" if d is None else f"{d['mean']:+.1f} ± {d['std']:.1f} ("
                         + ", ".join(f"{x:+.1f}" for x in d["per_seed"].values()) + ")")
        lines.append(f"| {variant} | {','.join(map(str, seeds))} | " + " | ".join(cells)
                     + f" | {PAPER.get(variant, '')} |")
    for label, row in summary["controls"].items():
        cells = []
        for k in SHOWN:
            cells += [f"{row[k]:.1f}" if k in row else "—", "—"]
        lines.append(f"| {label} (control) | — | " + " | ".join(cells) + " | |")
    lines += ["", "Mean ± sample standard deviation over seeds; Δ pairs each seed with DINO's "
              "run of the same seed (per-seed values in brackets). Controls: random weights "
              "(negative) and any features known to be good (positive) under the same "
              "protocols.", "", "Budget per run:", ""]
    for name, facts in budget.items():
        schedule = facts.get("schedule_steps", facts["steps"])
        cut = f" (stopped early: a {schedule}-step schedule)" if schedule != facts["steps"] else ""
        lines.append(f"- {name}: {facts['steps']} steps{cut}, {facts['images_seen']} images seen "
                     f"({facts['n_images']} distinct), {facts['device']} "
                     f"({facts.get('cpu') or ''}, {facts.get('precision')})")
    # Runs finished over several sittings may land on other machines; `auto` precision then
    # differs (bf16 on some CPUs), which moves scores by more than the seeds' spread.
    for key, what in (("precision", "precisions"), ("cpu", "CPUs"), ("torch", "torch versions")):
        seen = sorted({str(f.get(key)) for f in budget.values()})
        if len(seen) > 1:
            lines += ["", f"**Warning: these runs used different {what} ({', '.join(seen)}); "
                      "compare rows with care, or rerun with one setting (e.g. "
                      "`run.precision=fp32`).**"]
    return "\n".join(lines) + "\n"


def threads_per_job(jobs: int, overrides: list[str]) -> list[str]:
    """``run.threads`` for ``jobs`` concurrent runs: the usable cores split evenly (at least
    1 each), unless the overrides already set it."""
    if jobs == 1 or any(o.startswith("run.threads=") for o in overrides):
        return []
    from selfpatch.runtime import usable_cores

    return [f"run.threads={max(1, usable_cores() // jobs)}"]


def pretrain_all(runs: dict[str, tuple[str, int]], preset: str, overrides: list[str],
                 runner: Runner = run_subprocess, launcher: str = "", jobs: int = 1
                 ) -> dict[str, dict]:
    """:func:`pretrain` every ``run_dir -> (variant, seed)``, ``jobs`` at a time.

    With ``jobs > 1`` each run gets its share of the cores (:func:`threads_per_job`) and its
    own log ``OUT/<run>.log``; the first failure stops queued runs (running ones finish) and
    is raised. Returns ``run name -> budget facts``, in the order of ``runs``.
    """
    extra = threads_per_job(jobs, overrides)

    def one(run: str) -> dict:
        run_dir = Path(run)
        log = None if jobs == 1 else run_dir.parent / f"{run_dir.name}.log"
        return pretrain(run_dir, preset, *runs[run], [*overrides, *extra], runner, launcher,
                        log=log)

    if jobs == 1:
        return {Path(run).name: one(run) for run in runs}
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = {run: pool.submit(one, run) for run in runs}
    try:
        for future in as_completed(futures.values()):
            future.result()  # the first failure, as soon as it happens
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return {Path(run).name: future.result() for run, future in futures.items()}


def main(argv: list[str] | None = None, runner: Runner = run_subprocess) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu-quick")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="compare")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                        help="run these variants instead of the grid's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--control", action="append", default=[],
                        help="extra evaluated source (e.g. an exported supervised ViT)")
    parser.add_argument("--eval-args", default="", help="extra `selfpatch eval all` arguments")
    parser.add_argument("--no-eval", action="store_true",
                        help="only pre-train the variants asked for (without it, DINO is "
                             "added: every difference is measured against it)")
    parser.add_argument("--launcher", default="",
                        help='runs each pre-training under this, e.g. "torchrun '
                             '--nproc_per_node 4" (default: one process)')
    parser.add_argument("--jobs", type=int, default=1,
                        help="pre-train this many runs at once, the CPU cores shared among "
                             "them (default 1)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more")
    if args.jobs > 1 and args.launcher:
        parser.error("--jobs with --launcher: the runs would share the launcher's devices; "
                     "give each grid its own devices and run them one job each")
    variants = args.variants or GRIDS[args.grid]
    if "dino" not in variants and not args.no_eval:
        variants = ["dino", *variants]  # every difference is measured against DINO
    same_as = duplicates(args.preset, variants, args.overrides)
    variants = [v for v in variants if v not in same_as]
    for v, original in same_as.items():
        print(f"{v}: the same configuration as {original} with this preset; not run twice")
    runs = {str(args.out / f"{variant}-seed{seed}"): (variant, seed)
            for seed in args.seeds for variant in variants}
    budget = pretrain_all(runs, args.preset, args.overrides, runner, args.launcher, args.jobs)
    if args.no_eval:
        print(f"pre-trained {len(runs)} runs in {args.out}")
        return 0
    import torch  # only to read the architecture from a checkpoint

    first = torch.load(Path(next(iter(runs))) / "checkpoints" / "last.pt", map_location="cpu",
                       weights_only=True)["config"]["model"]
    controls = {f"random:{first['arch']}:{first['patch_size']}": "random weights"}
    controls.update({c: Path(c).stem for c in args.control})
    report = evaluate([*runs, *controls], args.out / "eval", args.eval_args.split(), runner)
    metrics = {e["source"]: e["metrics"] for e in report["checkpoints"]}
    summary = summarise(metrics, runs, controls)
    summary.update(budget=budget, preset=args.preset, seeds=args.seeds, same_as=same_as,
                   overrides=args.overrides, eval_args=args.eval_args)
    command = "python benchmarks/reproduce.py " + shlex.join(argv if argv is not None
                                                             else sys.argv[1:])
    title = f"{', '.join(variants)} — preset {args.preset}, seeds {args.seeds}"
    text = render(summary, title, budget, command)
    text += "".join(f"\n`{v}` has the same configuration as `{o}` with this preset: run once.\n"
                    for v, o in same_as.items())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "summary.md").write_text(text)
    print(text)
    print(f"summary: {args.out / 'summary.md'}   full report: {args.out / 'eval' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
