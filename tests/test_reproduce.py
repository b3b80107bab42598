"""The grid runner (benchmarks/reproduce.py): skips finished runs, resumes interrupted ones
exactly, aggregates seeds as hand-computed, and writes the table."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).parent))

import reproduce  # noqa: E402
import same_run  # noqa: E402

from selfpatch.train.trainer import pretrain  # noqa: E402
from test_train import TINY, make_images  # noqa: E402


def test_summary_matches_hand_computed_means_stds_and_differences():
    """k-NN: DINO 10, 12, 17 -> mean 13, sample std sqrt(13); SelfPatch 11, 15, 16 -> 14,
    sqrt(7); per-seed differences 1, 3, -1 -> mean 1, std 2. Seed 3 exists only for SelfPatch:
    it counts in its mean but has no difference."""
    dino = {0: 10.0, 1: 12.0, 2: 17.0}
    sp = {0: 11.0, 1: 15.0, 2: 16.0, 3: 14.0}
    metrics, runs = {}, {}
    for name, values in (("dino", dino), ("selfpatch", sp)):
        for seed, v in values.items():
            metrics[f"{name}-{seed}"] = {"knn_top1": v, "mIoU": 2 * v}
            runs[f"{name}-{seed}"] = (name, seed)
    metrics["random:vit_tiny:16"] = {"knn_top1": 9.0}
    out = reproduce.summarise(metrics, runs, {"random:vit_tiny:16": "random weights"})
    d, s = out["variants"]["dino"], out["variants"]["selfpatch"]
    assert d["mean"]["knn_top1"] == pytest.approx(13.0)
    assert d["std"]["knn_top1"] == pytest.approx(math.sqrt(13.0))
    assert s["mean"]["knn_top1"] == pytest.approx(14.0)
    assert s["std"]["knn_top1"] == pytest.approx(math.sqrt((9 + 1 + 4 + 0) / 3))
    diff = s["minus_dino"]["knn_top1"]
    assert diff["per_seed"] == {0: 1.0, 1: 3.0, 2: -1.0}
    assert diff["mean"] == pytest.approx(1.0) and diff["std"] == pytest.approx(2.0)
    assert s["minus_dino"]["mIoU"]["mean"] == pytest.approx(2.0)
    assert "J&F" not in s["mean"] and d["minus_dino"] == {}
    assert out["controls"] == {"random weights": {"knn_top1": 9.0}}
    assert reproduce.mean_std([5.0]) == (5.0, 0.0)


def test_table_warns_when_runs_differ_in_precision_or_cpu():
    """A grid finished over sittings on two machines: the table must say so, not hide it."""
    summary = reproduce.summarise({"a": {"knn_top1": 20.0}, "b": {"knn_top1": 21.0}},
                                  {"a": ("dino", 0), "b": ("dino+selfpatch", 0)}, {})
    facts = {"steps": 10, "images_seen": 320, "n_images": 100, "device": "cpu", "torch": "2.14"}
    same = {"a": {**facts, "cpu": "X", "precision": "fp32"},
            "b": {**facts, "cpu": "X", "precision": "fp32"}}
    assert "Warning" not in reproduce.render(summary, "t", same, "cmd")
    mixed = {"a": {**facts, "cpu": "X", "precision": "fp32"},
             "b": {**facts, "cpu": "Y", "precision": "bf16"}}
    warnings = [line for line in reproduce.render(summary, "t", mixed, "cmd").splitlines()
                if "Warning" in line]
    assert len(warnings) == 2
    assert "precisions (bf16, fp32)" in warnings[0] and "CPUs (X, Y)" in warnings[1]


def _fake_env(cmd: list[str]) -> Path:
    """What a finished `selfpatch pretrain` leaves that the grid reads: environment.json."""
    run_dir = Path(next(a for a in cmd if a.startswith("run.output_dir=")).split("=", 1)[1])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "environment.json").write_text(json.dumps(
        {"total_steps": 4, "total_batch": 8, "n_images": 16, "device": "cpu", "torch": "x"}))
    return run_dir


def test_jobs_run_concurrently_with_the_cores_shared_and_one_log_each(tmp_path, monkeypatch):
    import threading

    import selfpatch.runtime

    monkeypatch.setattr(selfpatch.runtime, "usable_cores", lambda: 4)
    both_running = threading.Barrier(2, timeout=20)  # breaks unless 2 runs overlap
    lock, active, peak, calls = threading.Lock(), [0], [0], []

    def runner(cmd: list[str], log: Path | None = None) -> None:
        with lock:
            calls.append((cmd, log))
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            first_two = len(calls) <= 2
        if first_two:
            both_running.wait()
        _fake_env(cmd)
        with lock:
            active[0] -= 1

    runs = {str(tmp_path / f"{v}-seed{s}"): (v, s)
            for s in (0, 1) for v in ("dino", "selfpatch")}
    budget = reproduce.pretrain_all(runs, "cpu-quick", ["optim.epochs=1"], runner, jobs=2)
    assert list(budget) == [Path(r).name for r in runs]  # the grid's order, not finishing order
    assert all(b["images_seen"] == 32 for b in budget.values())
    assert len(calls) == 4 and peak[0] == 2
    for cmd, log in calls:
        run_dir = _fake_env(cmd)
        assert "run.threads=2" in cmd and "optim.epochs=1" in cmd  # 4 cores / 2 jobs
        assert log == tmp_path / f"{run_dir.name}.log"
    assert all((Path(r) / "done.json").exists() for r in runs)
    # A thread count the user chose is kept; one job runs in this terminal, without a log.
    assert reproduce.threads_per_job(2, ["run.threads=1"]) == []
    assert reproduce.threads_per_job(3, []) == ["run.threads=1"]
    assert reproduce.threads_per_job(1, []) == []


def test_a_failed_job_stops_the_queued_ones_and_is_raised(tmp_path):
    started: list[str] = []

    def runner(cmd: list[str], log: Path | None = None) -> None:
        run_dir = _fake_env(cmd)
        started.append(run_dir.name)
        if run_dir.name == "dino-seed0":
            raise SystemExit(f"pretrain failed (exit 1); see {log}")
        time.sleep(0.5)  # the other job is still running when the failure comes

    runs = {str(tmp_path / f"dino-seed{s}"): ("dino", s) for s in range(5)}
    with pytest.raises(SystemExit, match="dino-seed0.log"):
        reproduce.pretrain_all(runs, "cpu-quick", [], runner, jobs=2)
    assert len(started) < 5 and "dino-seed4" not in started
    assert not (tmp_path / "dino-seed0" / "done.json").exists()


def test_logged_subprocess_writes_its_output_and_names_the_log_on_failure(tmp_path):
    log = tmp_path / "run.log"
    reproduce.run_subprocess([sys.executable, "-c", "print('hello from the run')"], log=log)
    assert "hello from the run" in log.read_text()
    with pytest.raises(SystemExit, match=f"exit 3.*{log}"):
        reproduce.run_subprocess([sys.executable, "-c", "import sys; sys.exit(3)"], log=log)


def test_gpu_budget_gives_every_run_the_same_whole_epochs():
    """1000 images, DINO 100 img/s, SelfPatch 50 img/s, 2 seeds: an epoch of all four runs
    takes 2 * (10 + 20) = 60 s, so 250 s hold 4 epochs; too little time still gives 1."""
    import reproduce_gpu

    rates = {"dino": 100.0, "selfpatch": 50.0}
    assert reproduce_gpu.plan(250.0, rates, 1000, 2) == 4
    assert reproduce_gpu.plan(10.0, rates, 1000, 2) == 1


def test_duplicate_variants_are_found_by_configuration():
    same = reproduce.duplicates("cpu-quick", ["dino", "selfpatch", "border-valid",
                                              "border-wrap"], [])
    assert same == {"border-valid": "selfpatch"}  # cpu-quick already uses valid borders


def test_grid_skips_finished_runs_resumes_killed_ones_and_writes_the_table(tmp_path):
    images = make_images(tmp_path / "imgs", n=16)
    overrides = [*TINY, f"data.path={images}", "optim.epochs=2"]
    grid = tmp_path / "grid"
    # Interrupted: selfpatch seed 0 stopped after 3 of its 4 steps (a checkpoint, no done.json).
    from selfpatch.config import load_config

    killed = grid / "selfpatch-seed0"
    pretrain(load_config("cpu-quick", [*reproduce.VARIANTS["selfpatch"], *overrides,
                                       "run.seed=0", f"run.output_dir={killed}",
                                       "run.progress=false", "optim.max_steps=3"]))
    assert not (killed / "done.json").exists()

    calls: list[list[str]] = []

    def runner(cmd: list[str]) -> None:
        calls.append(cmd)
        if cmd[3] == "pretrain":
            reproduce.run_subprocess(cmd)
            return
        out = Path(cmd[cmd.index("--out") + 1])  # eval all: a report with made-up metrics
        out.mkdir(parents=True, exist_ok=True)
        sources = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--checkpoint"]
        report = {"checkpoints": [{"source": s, "metrics": {"J&F": 50.0 + i, "mIoU": 5.0,
                                                            "knn_top1": 20.0 - i}}
                                  for i, s in enumerate(sources)]}
        (out / "report.json").write_text(json.dumps(report))

    args = ["--preset", "cpu-quick", "--grid", "compare", "--seeds", "0", "--out", str(grid),
            *overrides]
    assert reproduce.main(args, runner) == 0
    pre = [c for c in calls if c[3] == "pretrain"]
    assert len(pre) == 2 and sum("--resume" in c for c in pre) == 1
    # the evaluation keeps earlier sittings' scores of unchanged checkpoints
    evals = [c for c in calls if c[3] == "eval"]
    assert evals and all("--reuse" in c for c in evals)
    assert "--resume" in next(c for c in pre if f"run.output_dir={killed}" in c)
    facts = json.loads((killed / "done.json").read_text())
    assert facts["resumed"] is True
    # 16 images, batch 8, 2 epochs: 4 steps; the first sitting's max_steps=3 no longer applies
    assert facts["steps"] == facts["schedule_steps"] == 4 and facts["images_seen"] == 32
    # The resumed run is the run an uninterrupted one gives.
    whole = tmp_path / "whole"
    pretrain(load_config("cpu-quick", [*reproduce.VARIANTS["selfpatch"], *overrides,
                                       "run.seed=0", f"run.output_dir={whole}",
                                       "run.progress=false"]))
    assert same_run.compare(killed, whole) == []

    table = (grid / "summary.md").read_text()
    assert "| dino | 0 |" in table and "| selfpatch | 0 |" in table
    assert "random weights (control)" in table and "steps" in table
    summary = json.loads((grid / "summary.json").read_text())
    assert summary["variants"]["selfpatch"]["minus_dino"]["J&F"]["mean"] == pytest.approx(1.0)

    calls.clear()  # a second sitting: nothing to train, the evaluation is reused
    assert reproduce.main(args, runner) == 0
    assert calls == []


def test_dino_is_added_for_the_table_but_not_when_only_pre_training(tmp_path):
    trained: list[str] = []

    def runner(cmd: list[str]) -> None:  # a pre-training that only leaves its environment
        if cmd[3] != "pretrain":
            raise AssertionError("--no-eval must not evaluate")
        run = Path(next(a for a in cmd if a.startswith("run.output_dir=")).split("=", 1)[1])
        run.mkdir(parents=True)
        trained.append(run.name)
        (run / "environment.json").write_text(json.dumps(
            {"total_steps": 1, "total_batch": 1, "n_images": 1, "device": "cpu",
             "torch": torch.__version__}))

    args = ["--preset", "cpu-quick", "--seeds", "0", "--out", str(tmp_path), "--no-eval"]
    assert reproduce.main([*args, "--variants", "k-1", "lambda-1"], runner) == 0
    assert trained == ["k-1-seed0", "lambda-1-seed0"]
    # for the table DINO is added and trained first (here: the runner stops at it)
    with pytest.raises(FileNotFoundError):  # no such environment.json: not trained here
        reproduce.main([*args[:-1], "--variants", "k-1"], lambda cmd: trained.append(cmd))
    assert "run.output_dir=" + str(tmp_path / "dino-seed0") in trained[-1]


@pytest.mark.parametrize("preset", ["cpu-quick", "cpu-long", "coco-ablation-vit-ti16"])
def test_every_grid_variant_builds_on_the_shipped_presets(preset):
    """Each ablation must pass the checks `selfpatch pretrain` makes before training: e.g.
    `neighbourhood-all` with k = 4 on cpu-long's 2x2 local grids (3 candidates per patch)
    once stopped the CPU grid."""
    from selfpatch.config import load_config
    from selfpatch.train.factory import check_buildable

    for overrides in reproduce.VARIANTS.values():
        check_buildable(load_config(preset, overrides))


def test_jobs_refuse_a_launcher_and_a_count_below_one(capsys):
    def runner(cmd: list[str], log: Path | None = None) -> None:
        raise AssertionError("nothing may run")

    for args in (["--jobs", "2", "--launcher", "torchrun --nproc_per_node 2"], ["--jobs", "0"]):
        with pytest.raises(SystemExit) as exc:
            reproduce.main([*args, "--no-eval"], runner)
        assert exc.value.code == 2
    assert "--jobs with --launcher" in capsys.readouterr().err


def test_budget_counts_the_steps_a_max_steps_run_trained_not_its_schedule(tmp_path):
    """`optim.max_steps` stops a run before its schedule ends; environment.json still holds
    the schedule, so the table must not report the cut run as the full budget."""
    images = make_images(tmp_path / "imgs", n=16)
    run_dir = tmp_path / "dino-seed0"
    facts = reproduce.pretrain(run_dir, "cpu-quick", "dino", 0,
                               [*TINY, f"data.path={images}", "optim.epochs=2",
                                "optim.max_steps=1"])
    steps_logged = [json.loads(line)["step"]
                    for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps_logged) == 1
    assert facts["steps"] == 1 and facts["schedule_steps"] == 4 and facts["images_seen"] == 8
    text = reproduce.render({"variants": {}, "controls": {}}, "t", {"dino-seed0": facts}, "c")
    assert "1 steps (stopped early: a 4-step schedule), 8 images seen" in text
