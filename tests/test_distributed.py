"""DDP pre-training on 2 CPU processes (gloo) through ``torchrun -m selfpatch pretrain``.

Starting torch twice costs most of the time on a small CPU box, so ONE torchrun launch runs
every 2-process scenario in sequence: this file doubles as the worker script
(``torchrun ... tests/test_distributed.py --worker OUT IMAGES``). Each phase calls the real
command line (``selfpatch.cli.main``) with a fresh process group and records its exit status
per rank in ``OUT/rank<r>.json``; the tests below then read those records and the run
directories. Phases, in order:

1. ``full``: 2 epochs x 4 steps, per-rank batch 4 (global 8), drop-path off;
2. ``part`` + ``resume``: the same run stopped by ``optim.max_steps=3``, then ``--resume``;
3. ``exists``: ``full`` again without ``--resume``: a SelfPatchError on every rank (exit 2);
4. ``interrupt``: Ctrl-C (SIGINT) on both ranks during step 3: the step finishes, a checkpoint
   is saved, exit 130 on both, and the next phase can still start a process group;
5. ``crash`` (last, it ends the launch): rank 1 alone raises at step 2 while rank 0 waits in
   a collective; torchrun must take the whole job down promptly instead of hanging.

Rank 1 runs under an audit hook that records every file it opens for writing, creates,
renames or deletes below the test folder: only rank 0 may write the run directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TORCHRUN_TIMEOUT_S = 240  # a hang shows as a timeout, far above the ~30 s a launch takes
BATCH_PER_RANK = 4


def _run_args(images: Path, out_dir: Path, batch: int, *extra: str) -> list[str]:
    from test_train import TINY

    # A small lr keeps the 1-vs-2-process weight check meaningful at atol 1e-5: attention key
    # biases have an exactly-zero true gradient, so AdamW turns the reduction-order rounding
    # noise there into updates of about +-lr per step (lr peaks at 1.6e-5 here; 6e-6 seen).
    # fp32: the 1-vs-2-process equality is a float32 property (bf16 rounding would swamp it).
    return [*TINY, "run.precision=fp32", "model.drop_path=0", "optim.epochs=2",
            "optim.base_lr=0.0005",
            f"optim.batch_size={batch}", f"data.path={images}", f"run.output_dir={out_dir}",
            *extra]


# ----------------------------------------------------------------------------- worker side
def _audit_writes(root: Path, log: list[str]) -> None:
    """Record file-system writes below ``root`` made by this process (PEP 578 audit hook)."""
    root_s = str(root)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else isinstance(flags, int) and flags & write_flags)
            if writing and str(path).startswith(root_s):
                log.append(f"open {path} {mode or flags}")
        elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
            if args and str(args[0]).startswith(root_s):
                log.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


def _worker(out: Path, images: Path) -> None:
    from selfpatch.cli import main
    from selfpatch.methods.teacher_student import TeacherStudent

    rank = int(os.environ["RANK"])
    record: dict = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "writes": []}
    (out / "runs").mkdir(exist_ok=True)
    if rank != 0:
        _audit_writes(out / "runs", record["writes"])
        (out / "runs" / "probe-rank1").write_text("the audit hook must see this write")
    forward = TeacherStudent.forward
    trap = {"call": 0, "at": 0, "action": None}

    def trapped(self, *args, **kwargs):
        trap["call"] += 1
        if trap["call"] == trap["at"] and trap["action"] is not None:
            trap["action"]()
        return forward(self, *args, **kwargs)

    TeacherStudent.forward = trapped

    # Each phase starts and destroys its own process group, as one CLI run does. Re-creating
    # the default group on torchrun's agent store would reuse the first group's keys, so
    # rank 0 hosts a fresh store per phase on a free port, published through the agent store.
    from datetime import timedelta

    import torch.distributed as dist

    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          is_master=False, timeout=timedelta(seconds=60))
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "False"

    def phase(name: str, argv: list[str], at: int = 0, action=None) -> None:
        if rank == 0:
            agent.set(f"selfpatch-test-port-{name}", str(_free_port()))
        os.environ["MASTER_PORT"] = agent.get(f"selfpatch-test-port-{name}").decode()
        trap.update(call=0, at=at, action=action)
        start = time.perf_counter()
        record[name] = {"rc": "started"}
        _save(out, rank, record)
        rc = main(argv)
        record[name] = {"rc": rc, "seconds": round(time.perf_counter() - start, 2)}
        _save(out, rank, record)

    def run(name: str, *extra: str) -> list[str]:
        return ["pretrain", *_run_args(images, out / "runs" / name, BATCH_PER_RANK, *extra)]

    phase("full", run("full"))
    phase("part", run("part", "optim.max_steps=3"))
    phase("resume", [*run("part"), "--resume"])  # after the overrides: --resume takes a value
    phase("exists", run("full"))
    phase("interrupt", run("interrupt"), at=3,
          action=lambda: os.kill(os.getpid(), signal.SIGINT))

    def crash() -> None:
        if rank == 1:
            raise RuntimeError("injected failure on rank 1")

    phase("crash", run("crash"), at=2, action=crash)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _save(out: Path, rank: int, record: dict) -> None:
    tmp = out / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, out / f"rank{rank}.json")


# ----------------------------------------------------------------------------- test side
@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One torchrun launch of all phases; returns (out folder, images, CompletedProcess, s)."""
    from test_train import make_images

    root = tmp_path_factory.mktemp("dist")
    images = make_images(root / "imgs")
    out = root / "out"
    out.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = ([str(torchrun)] if torchrun.exists() else [sys.executable, "-m",
                                                      "torch.distributed.run"])
    cmd += ["--standalone", "--nproc_per_node=2", __file__, "--worker", str(out), str(images)]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=TORCHRUN_TIMEOUT_S)
    return out, images, proc, time.perf_counter() - start


def _records(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _phase_rc(launch, name: str) -> list:
    out, _, proc, _ = launch
    records = _records(out)
    assert all(name in r for r in records), proc.stderr[-3000:]
    return [r[name]["rc"] for r in records]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def test_two_processes_match_one(launch, tmp_path):
    """2 ranks x batch 4 == 1 process x batch 8 over the same samples: losses, lr, weights."""
    from selfpatch.config import load_config
    from selfpatch.train.trainer import pretrain

    out, images, proc, _ = launch
    assert _phase_rc(launch, "full") == [0, 0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks; OpenMP threads on a busy 2-core box can stall
    try:
        one = pretrain(load_config("cpu-quick", _run_args(images, tmp_path / "one",
                                                          2 * BATCH_PER_RANK)))
    finally:
        torch.set_num_threads(threads)
    two = out / "runs" / "full"
    m1, m2 = _metrics(one), _metrics(two)
    assert len(m1) == len(m2) == 8
    for a, b in zip(m1, m2, strict=True):
        for key in ("loss", "image_loss", "patch_loss", "lr", "wd", "momentum"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)
    env1 = json.loads((one / "environment.json").read_text())
    env2 = json.loads((two / "environment.json").read_text())
    assert env2["world_size"] == 2 and env2["total_batch"] == env1["total_batch"] == 8
    assert env2["precision"]["name"] == env1["precision"]["name"] == "fp32"  # rank 0's choice
    assert env2["lr"] == pytest.approx(env1["lr"]) == pytest.approx(0.0005 * 8 / 256)
    c1, c2 = _model(one), _model(two)
    assert c2["world_size"] == 2 and c1["step"] == c2["step"] == 8
    for key, value in c1["model"].items():  # student, teacher, both centres
        torch.testing.assert_close(c2["model"][key], value, atol=1e-5, rtol=0, msg=key)


def test_two_process_resume_is_exact(launch):
    out, _, proc, _ = launch
    assert _phase_rc(launch, "part") == [0, 0] and _phase_rc(launch, "resume") == [0, 0]
    full, part = _model(out / "runs" / "full"), _model(out / "runs" / "part")
    assert full["step"] == part["step"] == 8
    for key, value in full["model"].items():
        assert torch.equal(value, part["model"][key]), key
    assert [r["loss"] for r in _metrics(out / "runs" / "full")] == \
        [r["loss"] for r in _metrics(out / "runs" / "part")]


def test_only_rank_zero_writes(launch):
    out, _, proc, _ = launch
    writes = _records(out)[1]["writes"]
    assert len(writes) == 1 and "probe-rank1" in writes[0], writes  # the hook works ...
    # ... and saw no other write by rank 1 below the runs folder
    full = out / "runs" / "full"
    assert {p.name for p in full.iterdir()} >= {"config.yaml", "environment.json",
                                                "metrics.jsonl", "checkpoints"}
    # no stray temporary checkpoint files from an interrupted or concurrent write
    for run in ("full", "part", "interrupt", "crash"):
        folder = out / "runs" / run / "checkpoints"
        assert not folder.exists() or [p.name for p in folder.iterdir()] in ([], ["last.pt"])


def test_error_on_every_rank_exits_every_rank(launch):
    """An existing run without --resume: one-line SelfPatchError, exit 2 on both ranks."""
    out, _, proc, _ = launch
    assert _phase_rc(launch, "exists") == [2, 2]
    assert "already holds a run" in proc.stderr


def test_ctrl_c_stops_both_ranks(launch):
    out, _, proc, _ = launch
    assert _phase_rc(launch, "interrupt") == [130, 130]
    assert "selfpatch: stopped by SIGINT after step 3; checkpoint saved" in proc.stderr
    assert "--resume" in proc.stderr
    saved = torch.load(out / "runs" / "interrupt" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 3
    # ... and a new process group could be started afterwards (the crash phase ran)
    assert all("crash" in r for r in _records(out))


def test_failure_on_one_rank_does_not_hang(launch):
    """Rank 1 raises mid-step; torchrun stops the job (non-zero exit) well before a timeout."""
    out, _, proc, elapsed = launch
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr
    assert elapsed < TORCHRUN_TIMEOUT_S
    assert all(r["crash"]["rc"] == "started" for r in _records(out))


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(Path(sys.argv[2]), Path(sys.argv[3]))
