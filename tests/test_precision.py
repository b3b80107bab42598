"""Mixed precision (bf16/fp16 autocast, GradScaler) and torch.compile, on CPU.

CPU autocast runs the same code paths as CUDA autocast (the dtype policy differs per op, the
loss stays float32): short runs must give finite losses, the checkpoint must carry the
GradScaler state, and an interrupted run must resume bit-exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from selfpatch.runtime import AMP_DTYPES
from selfpatch.train.factory import build_teacher_student
from selfpatch.train.trainer import pretrain
from test_train import cfg_for, read_metrics

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # Explicit bf16/fp16 on a CPU without a fast path warns (tests/test_runtime.py checks it).
    pytest.mark.filterwarnings("ignore:run.precision=bf16 on a CPU without native bf16"),
    pytest.mark.filterwarnings("ignore:precision fp16 on a CPU has no fast path"),
]


def _ckpt(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_run_checkpoint_and_exact_resume(images, tmp_path, precision):
    """4 steps straight == 2 steps, save, resume, 2 more; scaler state round-trips."""
    extra = [f"run.precision={precision}", "optim.batch_size=4", "optim.epochs=1"]  # 4 steps
    full = pretrain(cfg_for(images, tmp_path / "full", *extra))
    rows = read_metrics(full)
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) for r in rows)

    part = pretrain(cfg_for(images, tmp_path / "part", *extra, "optim.max_steps=3"))
    saved = _ckpt(part)
    assert saved["step"] == 3
    if precision == "fp16":
        # enabled scaler: its scale (possibly backed off from 2**16 after overflows) is saved
        assert set(saved["scaler"]) >= {"scale", "_growth_tracker"}
        assert 0 < saved["scaler"]["scale"] <= 2.0**16
    else:
        assert saved["scaler"] == {}  # bf16 needs no loss scaling: a disabled scaler
    pretrain(cfg_for(images, tmp_path / "part", *extra), resume=True)

    a, b = _ckpt(full), _ckpt(part)
    assert a["step"] == b["step"] == 4
    assert a["scaler"] == b["scaler"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_metrics(part)]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_reaches_the_backbone_and_keeps_losses_float32(images, tmp_path, precision):
    cfg = cfg_for(images, tmp_path / "r", f"run.precision={precision}")
    model = build_teacher_student(cfg)
    seen = []
    handle = model.student.backbone.vit.blocks[0].attn.qkv.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype))
    views = [torch.randn(2, 3, 32, 32)] * 2 + [torch.randn(2, 3, 16, 16)] * 2
    with torch.autocast("cpu", dtype=AMP_DTYPES[precision]):
        loss, stats = model(views, 0.04)
    handle.remove()
    assert seen and all(d == AMP_DTYPES[precision] for d in seen)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    loss.backward()
    grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)  # master weights stay fp32


@pytest.mark.slow
def test_compile_runs_two_steps(images, tmp_path, request):
    """``run.compile=true`` (ViTBackbone.compile): 2 steps, finite, same loss as eager.

    Inductor compiles 4 graphs on CPU (2 crop sizes x forward/backward): about 4 minutes on
    2 cores, so this runs only when slow tests are asked for (``pytest -m slow``).
    """
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow (torch.compile on CPU): run with -m slow")
    extra = ["optim.max_steps=2", "model.drop_path=0", "run.precision=fp32"]
    compiled = read_metrics(pretrain(cfg_for(images, tmp_path / "c", "run.compile=true",
                                             *extra)))
    eager = read_metrics(pretrain(cfg_for(images, tmp_path / "e", *extra)))
    assert len(compiled) == 2 and all(math.isfinite(r["loss"]) for r in compiled)
    for a, b in zip(compiled, eager, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-3)
