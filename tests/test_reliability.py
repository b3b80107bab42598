"""Every stop, crash and bad value handled: non-finite steps, kills at any moment (inside the
checkpoint write too), SIGTERM, resumes with another config, bad files, bad values."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).parent))

import same_run  # noqa: E402

from selfpatch.cli import main as cli_main  # noqa: E402
from selfpatch.config import load_config  # noqa: E402
from selfpatch.errors import SelfPatchError  # noqa: E402
from selfpatch.methods.teacher_student import TeacherStudent, effective_rank  # noqa: E402
from selfpatch.train.trainer import pretrain  # noqa: E402
from test_train import cfg_for, make_images  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("data") / "imgs", n=16)


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


class NaNGradient(torch.autograd.Function):
    """Identity forward (the loss stays finite), NaN backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def poison_forward(monkeypatch, at: int, action) -> None:
    """Call ``action(loss)`` on the ``at``-th forward (1-based) and return what it gives."""
    forward, calls = TeacherStudent.forward, {"n": 0}

    def poisoned(self, views, teacher_temp, diagnostics=False):
        loss, stats = forward(self, views, teacher_temp, diagnostics)
        calls["n"] += 1
        return (action(loss) if calls["n"] == at else loss), stats

    monkeypatch.setattr(TeacherStudent, "forward", poisoned)


# ----------------------------------------------------------------------------- non-finite
def test_nan_gradient_with_finite_loss_stops_before_the_step(images, tmp_path, monkeypatch):
    """Step 3: finite loss, NaN gradients. No step applied, no checkpoint written after it,
    one line naming the step and the quantity, no fp32 advice for an fp32 run."""
    run = pretrain(cfg_for(images, tmp_path / "run", "optim.epochs=1", "run.precision=fp32"))
    before = (run / "checkpoints" / "last.pt").read_bytes()
    poison_forward(monkeypatch, 1, NaNGradient.apply)
    cfg = cfg_for(images, tmp_path / "run", "optim.epochs=2", "run.precision=fp32",
                  "run.save_every_steps=1", "run.allow_changes=[optim.epochs]")
    with pytest.raises(SelfPatchError) as info:
        pretrain(cfg, resume=True)
    message = str(info.value)
    assert "the gradient norm became NaN/inf at step 3; that step was not applied" in message
    assert "unchanged" in message and "fp32" not in message and "\n" not in message
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_effective_rank_of_non_finite_tokens_is_nan_not_a_crash():
    tokens = torch.randn(2, 4, 8)
    tokens[0, 1, 2] = float("nan")
    assert torch.isnan(effective_rank(tokens))
    assert 1.0 <= float(effective_rank(torch.randn(2, 4, 8))) <= 8.0


# ----------------------------------------------------------------------------- kills
KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {src!r})
    import torch
    import selfpatch.checkpoint as ck
    import selfpatch.io as io
    from selfpatch.methods.teacher_student import TeacherStudent
    where, at = sys.argv[1], int(sys.argv[2])
    calls = {{"n": 0}}
    def hit():
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
    if where == "step":  # in the middle of a training step
        forward = TeacherStudent.forward
        def f(self, *a, **k):
            hit()
            return forward(self, *a, **k)
        TeacherStudent.forward = f
    elif where == "write":  # half of the checkpoint bytes written to the temporary file
        save = torch.save
        def s(obj, path, *a, **k):
            save(obj, path, *a, **k)
            if os.path.basename(str(path)).startswith("."):  # atomic_write's temporary
                calls["n"] += 1
                if calls["n"] == at:
                    with open(path, "r+b") as fh:
                        fh.truncate(os.path.getsize(path) // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
        ck.torch.save = s
    elif where == "rename":  # right after the rename, before the folder fsync
        replace = os.replace
        def r(a, b):
            replace(a, b)
            if str(b).endswith(".pt"):
                hit()
        io.os.replace = r
    from selfpatch.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def test_sigkill_anywhere_then_resume_equals_an_uninterrupted_run(images, tmp_path):
    """Killed mid-step, inside the checkpoint write (temporary file half written) and right
    after a rename; each time resumed. The end result equals an uninterrupted run bit for
    bit, metrics have no duplicate steps and no temporary file is left behind."""
    args = ["pretrain", "--config", "cpu-quick", *cfg_args(images), "optim.epochs=4",
            "run.save_every_steps=2"]  # 8 steps; saves at 2, 4, 4 (epoch end), 6, 8, 8
    whole = tmp_path / "whole"
    assert cli_main([*args, f"run.output_dir={whole}"]) == 0
    run = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(src=str(SRC)))
    resume: list[str] = []
    # killed in step 3 (last good: 2), in the epoch-end write at 4 (the step save at 4 is
    # good), after the rename at 6 (good), in step 8 (6 stays)
    for where, at in (("step", 3), ("write", 2), ("rename", 1), ("step", 2)):
        proc = subprocess.run([sys.executable, str(script), where, str(at), *args,
                               f"run.output_dir={run}", *resume], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (where, proc.stderr[-2000:])
        if (run / "checkpoints" / "last.pt").exists():
            resume = ["--resume"]
    assert cli_main([*args, f"run.output_dir={run}", *resume]) == 0
    assert same_run.compare(run, whole) == []
    steps = metric_steps(run)
    assert steps == sorted(set(steps)) == list(range(1, len(steps) + 1))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]


def cfg_args(images: Path) -> list[str]:
    from test_train import TINY

    return [*TINY, f"data.path={images}"]


# ----------------------------------------------------------------------------- signals
def test_sigterm_finishes_the_step_saves_and_prints_the_resume_command(
        images, tmp_path, monkeypatch, capsys):
    args = ["pretrain", "--config", "cpu-quick", *cfg_args(images), "optim.epochs=2"]
    whole = tmp_path / "whole"
    assert cli_main([*args, f"run.output_dir={whole}"]) == 0
    run = tmp_path / "run"
    poison_forward(monkeypatch, 3, lambda loss: (os.kill(os.getpid(), signal.SIGTERM), loss)[1])
    assert cli_main([*args, f"run.output_dir={run}"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("selfpatch: stopped by SIGTERM after step 3; checkpoint saved to")
    assert err.endswith("--resume") and "pretrain --config cpu-quick" in err
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    assert cli_main([*args, f"run.output_dir={run}", "--resume"]) == 0
    assert same_run.compare(run, whole) == []


# ----------------------------------------------------------------------------- resume
def test_resume_with_another_config_is_refused_unless_allowed(images, tmp_path):
    run = pretrain(cfg_for(images, tmp_path / "run", "optim.epochs=1"))
    for extra, keys in ((["model.arch=vit_small"], "model.arch"),
                        (["dino.out_dim=256"], "dino.out_dim"),
                        (["optim.batch_size=4"], "optim.batch_size"),
                        (["optim.epochs=2"], "optim.epochs")):
        with pytest.raises(SelfPatchError, match=f"another configuration \\({keys} ") as info:
            pretrain(cfg_for(images, run, "optim.epochs=1", *extra), resume=True)
        assert f"run.allow_changes=[{keys}]" in str(info.value)
    # free keys (where and how it runs) and an explicitly allowed change both resume
    pretrain(cfg_for(images, run, "optim.epochs=2", "run.log_every=3", "data.num_workers=0",
                     "run.allow_changes=[optim.epochs]"), resume=True)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 4  # 2x2


def test_keys_added_after_a_run_started_count_as_their_defaults():
    from selfpatch.config import load_config, resume_changes

    cfg = load_config("cpu-quick")
    saved = cfg.to_dict()
    del saved["dino"]["head_bn"], saved["model"]["fidelity"]  # a run from before these keys
    assert resume_changes(saved, cfg) == []
    assert resume_changes(saved, load_config("cpu-quick", ["dino.head_bn=true"])) == [
        "dino.head_bn"]


def test_resume_trims_metrics_logged_after_the_checkpoint_and_stale_temporaries(images,
                                                                             tmp_path):
    run = pretrain(cfg_for(images, tmp_path / "run", "optim.epochs=2", "optim.max_steps=3"))
    with (run / "metrics.jsonl").open("a") as fh:  # a kill after logging steps 4-5, mid-line
        fh.write(json.dumps({"step": 4}) + "\n" + json.dumps({"step": 5}) + "\n{\"step\": 6, ")
    stale = run / "checkpoints" / ".last.pt.x1y2z3"
    stale.write_bytes(b"half a checkpoint")
    pretrain(cfg_for(images, run, "optim.epochs=2"), resume=True)
    assert metric_steps(run) == list(range(1, 5))  # 16 images / batch 8 x 2 epochs
    assert not stale.exists()
    mode = stat.S_IMODE((run / "checkpoints" / "last.pt").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # a normal file, not mkstemp's 0600


def test_fresh_start_drops_metrics_of_an_attempt_killed_before_its_first_checkpoint(
        images, tmp_path):
    # seen in session 8: a run killed at step ~30 of a 250-step epoch left its step-25 line,
    # and the restarted run (different precision) appended its own step 25 after it
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 123.0}) + "\n"
                                       + json.dumps({"step": 2, "loss": 456.0}) + "\n")
    pretrain(cfg_for(images, run, "optim.epochs=1", "run.log_every=1"))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]  # 16 images / batch 8, logged once each
    assert all(r["loss"] not in (123.0, 456.0) for r in lines)


def test_options_and_overrides_in_any_order(images, tmp_path):
    out = tmp_path / "run"
    assert cli_main(["pretrain", *cfg_args(images), "optim.epochs=1",
                     f"run.output_dir={out}"]) == 0
    assert cli_main(["pretrain", *cfg_args(images), "optim.epochs=1", "--resume",
                     f"run.output_dir={out}", "--config", "cpu-quick"]) == 0


# ----------------------------------------------------------------------------- files
def test_unreadable_checkpoints_give_one_safe_line(tmp_path):
    from selfpatch.checkpoint import load_training_checkpoint

    good = tmp_path / "good.pt"
    torch.save({"format": "selfpatch-train", "x": torch.zeros(10000)}, good)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:1000])
    (tmp_path / "garbage.pt").write_bytes(os.urandom(2000))

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"format": "selfpatch-train", "x": Evil()}, tmp_path / "evil.pt")
    for name, needle in (("truncated", "truncated or not a torch file"),
                         ("garbage", "truncated or not a torch file"),
                         ("evil", "refused (loading it could run code)")):
        with pytest.raises(SelfPatchError) as info:
            load_training_checkpoint(tmp_path / f"{name}.pt")
        text = str(info.value)
        assert needle in text and "\n" not in text and "weights_only=False" not in text


@pytest.mark.parametrize("failure,needle", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1 vs 2"),
     "the disk is full"),
    (PermissionError(errno.EACCES, "Permission denied"), "no permission to write"),
])
def test_write_failures_name_the_path(tmp_path, monkeypatch, failure, needle):
    from selfpatch import checkpoint

    target = tmp_path / "ckpt" / "last.pt"
    target.parent.mkdir()
    target.write_bytes(b"x" * 2**20)  # a previous version: its size is what is needed

    def fail(obj, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(checkpoint.torch, "save", fail)
    with pytest.raises(SelfPatchError) as info:
        checkpoint.atomic_save({"a": 1}, target)
    text = str(info.value)
    assert needle in text and str(target) in text and "\n" not in text
    if "full" in needle:
        assert "MiB free" in text and "about 1 MiB needed" in text
    assert target.read_bytes() == b"x" * 2**20  # the previous file is intact
    assert [p.name for p in target.parent.iterdir()] == ["last.pt"]  # no temporary left


def test_sixteen_bit_and_float_images_are_scaled(tmp_path):
    import numpy as np
    from PIL import Image

    from selfpatch.io import load_rgb

    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(tmp_path / "g.png")
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    for name in ("g.png", "f.tif"):
        rgb = np.asarray(load_rgb(tmp_path / name))
        assert rgb.shape == (1, 3, 3) and rgb[0, :, 0].tolist() == [0, 128, 255], name


# ----------------------------------------------------------------------------- values
BAD_VALUES = [
    ("run.seed=-1", "run.seed"), ("data.num_workers=-1", "data.num_workers"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs"), ("model.drop_path=2", "model.drop_path"),
    ("dino.out_dim=0", "dino.out_dim"), ("optim.base_lr=-1", "optim.base_lr"),
    ("optim.min_lr=-1", "optim.min_lr"), ("optim.weight_decay=-0.5", "optim.weight_decay"),
    ("optim.clip_grad=-1", "optim.clip_grad"),
    ("dino.momentum_teacher=1.5", "dino.momentum_teacher"),
    ("optim.max_steps=-1", "optim.max_steps"), ("data.limit_images=-5", "data.limit_images"),
    ("model.patch_size=-16", "model.patch_size"), ("dino.teacher_temp=0", "dino.teacher_temp"),
    ("selfpatch.k=0", "selfpatch.k"), ("optim.batch_size=0", "optim.batch_size"),
]


@pytest.mark.parametrize("override,key", BAD_VALUES)
def test_bad_values_name_their_key(override, key):
    with pytest.raises(SelfPatchError, match=f"config key {key}: .* out of range"):
        load_config("cpu-quick", [override])


def test_bad_runtime_settings_are_one_line_errors(images, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(SelfPatchError, match="run.device cuda asked for CUDA"):
            pretrain(cfg_for(images, tmp_path / "a", "run.device=cuda"))
    with pytest.raises(SelfPatchError, match="run.output_dir: cannot create /dev/null/x"):
        pretrain(cfg_for(images, Path("/dev/null/x")))
