"""Swin-T as a backbone (issue 12): last-stage grid, SelfPatch on it, training and evaluation."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

from selfpatch.errors import SelfPatchError
from selfpatch.models.backbone import SwinBackbone, make_backbone_spec
from selfpatch.models.loading import load_backbone
from selfpatch.train.factory import build_teacher_student
from selfpatch.train.optim import build_optimizer
from selfpatch.train.trainer import pretrain, train_step
from test_train import cfg_for, fixed_views, read_metrics

sys.path.insert(0, str(Path(__file__).parent))

SWIN = ["model.arch=swin_tiny", "model.patch_size=0", "data.global_size=64", "data.n_local=0",
        "selfpatch.k=3", "moby.hidden_dim=64", "moby.dim=32", "moby.queue_size=16"]


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return SwinBackbone(make_backbone_spec("swin_tiny", img_size=64)).eval()


def test_swin_tokens_are_the_last_stage_grid(swin):
    assert swin.patch_size == 32 and swin.embed_dim == 768 and swin.num_heads == 24
    for h, w in [(64, 64), (96, 160), (224, 224)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            mean, tokens = swin.forward_tokens(x)
            nhwc = swin.vit.forward_features(x)  # timm's own (B, h, w, D) output
        assert swin.grid_shape(h, w) == (h // 32, w // 32)
        assert tokens.shape == (2, (h // 32) * (w // 32), 768)
        # Row-major grid order, as SelfPatch's neighbour tables assume.
        torch.testing.assert_close(tokens.reshape(2, h // 32, w // 32, 768), nhwc)
        torch.testing.assert_close(mean, tokens.mean(dim=1))
    with pytest.raises(SelfPatchError, match="multiple of the patch size 32"):
        swin.grid_shape(72, 64)
    assert not swin.has_global_attention
    with pytest.raises(SelfPatchError, match="no global self-attention"):
        swin.last_self_attention(torch.randn(1, 3, 64, 64))


def test_swin_crop_sizes_are_checked_before_any_data(tmp_path):
    from selfpatch.config import load_config
    from selfpatch.train.factory import check_buildable

    with pytest.raises(SelfPatchError, match="data.local_size: 48 is not a multiple of 32"):
        check_buildable(load_config("cpu-quick", ["model.arch=swin_tiny", "model.patch_size=0"]))
    with pytest.raises(SelfPatchError, match="too small"):  # 32 px local crops: a 1x1 grid
        check_buildable(load_config("cpu-quick", ["model.arch=swin_tiny", "model.patch_size=0",
                                                  "data.local_size=32"]))


def test_swin_refuses_vit_only_options():
    for kwargs in ({"patch_size": 16}, {"final_norm": False}, {"pos_resize": "reference"}):
        with pytest.raises(SelfPatchError, match="Swin keeps its own patch size"):
            make_backbone_spec("swin_tiny", **kwargs)


# Swin-T is 28M parameters: CI runs MoBY + SelfPatch (Tab. 5's Swin row), `-m slow` the rest.
SLOW = pytest.mark.slow


@pytest.mark.parametrize("method", [pytest.param("dino", marks=SLOW),
                                    pytest.param("dino+selfpatch", marks=SLOW),
                                    pytest.param("mocov3", marks=SLOW),
                                    pytest.param("mocov3+selfpatch", marks=SLOW),
                                    pytest.param("moby", marks=SLOW), "moby+selfpatch"])
def test_swin_training_lowers_the_loss_on_a_repeated_batch(images, method):
    """12 steps on one batch of 8; then the trained student scores lower than the initial one
    against the same (trained) teacher, centres and queues (DINO's logged loss is not
    monotone early on, so the check compares students, as test_train does)."""
    torch.manual_seed(3)
    cfg = cfg_for(images, Path("unused"), *SWIN, f"method={method}", "model.drop_path=0",
                  "dino.out_dim=64", "moco.hidden_dim=64", "moco.pred_hidden_dim=64",
                  "moco.dim=32")
    model = build_teacher_student(cfg)
    initial = copy.deepcopy(model.student.state_dict())
    optimizer = build_optimizer(model.student, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    views = [v[:8] for v in fixed_views(images, cfg)]
    for _ in range(12):
        loss, _ = train_step(model, views, optimizer, scaler, lr=1e-3, weight_decay=0.0,
                             momentum=0.9, teacher_temp=0.04, clip_grad=3.0,
                             freeze_last_layer=False)
        assert math.isfinite(float(loss.detach()))
    scores = {}
    for name in ("trained", "initial"):
        probe = copy.deepcopy(model).eval()
        if name == "initial":
            probe.student.load_state_dict(initial)
        with torch.no_grad():
            scores[name] = float(probe(views, 0.04)[0])
    assert scores["trained"] < scores["initial"] - 0.05, scores


@pytest.mark.parametrize("method", [pytest.param("moby", marks=SLOW), "moby+selfpatch",
                                    pytest.param("dino+selfpatch", marks=SLOW),
                                    pytest.param("mocov3", marks=SLOW)])
def test_swin_trains_resumes_and_evaluates(images, tmp_path, method):
    """Tab. 5's Swin-T rows are MoBY (+ SelfPatch): a few steps, exact resume, eval all."""
    from test_eval_cli import FAST, run_cli
    from test_eval_data import make_davis, make_knn, make_seg

    extra = [*SWIN, f"method={method}", "optim.epochs=2"]
    full = pretrain(cfg_for(images, tmp_path / "full", *extra))
    pretrain(cfg_for(images, tmp_path / "part", *extra, "optim.max_steps=3"))
    part = pretrain(cfg_for(images, tmp_path / "part", *extra), resume=True)
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    losses = [r["loss"] for r in read_metrics(full)]
    assert losses == [r["loss"] for r in read_metrics(part)]
    assert all(math.isfinite(v) for v in losses)
    assert isinstance(load_backbone(full), SwinBackbone)

    root = tmp_path / "evaldata"
    make_davis(root / "DAVIS", num_seqs=1, num_frames=3, size=64)
    make_seg(root / "ADEChallengeData2016", num_train=2, num_val=1)
    make_knn(root / "imagenet", num_classes=2, per_class=3)
    out = tmp_path / "report"
    assert run_cli(["eval", "all", "--checkpoint", str(full), "--data-root", str(root),
                    "--num-classes", "3", "--out", str(out), *FAST]) == 0
    row = next(line for line in (out / "report.md").read_text().splitlines()
               if line.startswith("| full |"))
    assert "n/a" not in row
    pictures = next(out.glob("*/pictures"))
    assert sorted(p.name for p in pictures.iterdir()) == ["pca.png", "propagation.png"]
