"""`model.fidelity=reference`: each item against a computation written out here (issue 12)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfpatch.config import load_config
from selfpatch.errors import SelfPatchError
from selfpatch.methods.teacher_student import _group_by_size
from selfpatch.models.backbone import ViTBackbone, make_backbone_spec, reference_pos_embed
from selfpatch.models.export import export_backbone
from selfpatch.models.heads import DINOHead
from selfpatch.models.loading import load_backbone
from selfpatch.train.factory import build_schedules, build_teacher_student
from selfpatch.train.trainer import pretrain
from test_train import TINY, cfg_for, read_metrics


def _cubic_weights(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """``(n_out, n_in)`` matrix of 1-D bicubic resampling as torch computes it for a given
    ``scale_factor`` (align_corners=False, Keys kernel with A = -0.75, edge indices clamped)."""
    a = -0.75

    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return 0.0

    m = np.zeros((n_out, n_in))
    for j in range(n_out):
        src = (j + 0.5) / scale - 0.5
        base = math.floor(src)
        for offset in (-1, 0, 1, 2):
            i = base + offset
            m[j, min(max(i, 0), n_in - 1)] += kernel(src - i)
    return m


@pytest.mark.parametrize("class_token", [False, True])
def test_reference_pos_embed_equals_hand_bicubic_with_dino_scale_factor(class_token):
    torch.manual_seed(0)
    backbone = ViTBackbone(make_backbone_spec("vit_tiny", 16, 224, class_token=class_token,
                                              pos_resize="reference"))
    vit = backbone.vit
    d = vit.embed_dim
    n_prefix = vit.num_prefix_tokens
    table = vit.pos_embed[0, n_prefix:].detach().double().numpy().reshape(14, 14, d)
    for h, w in [(6, 6), (4, 9), (14, 14)]:
        x = torch.zeros(1, h, w, d)
        tokens = reference_pos_embed(vit, x)[0, n_prefix:].detach().double().numpy()
        if (h, w) == (14, 14):
            expected = table  # the stored size: no resizing at all
        else:
            mh = _cubic_weights(14, h, (h + 0.1) / 14)
            mw = _cubic_weights(14, w, (w + 0.1) / 14)
            expected = np.einsum("ai,ijd,bj->abd", mh, table, mw)
        np.testing.assert_allclose(tokens.reshape(h, w, d), expected, rtol=1e-5, atol=1e-6)
        if class_token:  # [CLS] slot: cls_token + its own position embedding, not resized
            got_cls = reference_pos_embed(vit, x)[0, 0]
            torch.testing.assert_close(got_cls, vit.cls_token[0, 0] + vit.pos_embed[0, 0])


def test_reference_pos_embed_differs_from_timm_only_off_the_stored_grid():
    torch.manual_seed(1)
    timm_bb = ViTBackbone(make_backbone_spec("vit_tiny", 16, 224))
    ref_bb = ViTBackbone(make_backbone_spec("vit_tiny", 16, 224, pos_resize="reference"))
    ref_bb.load_state_dict(timm_bb.state_dict())
    with torch.no_grad():
        same = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(ref_bb(same), timm_bb(same))
        small = torch.randn(1, 3, 96, 96)
        assert (ref_bb(small) - timm_bb(small)).abs().max() > 1e-3


def _reference_cfg(*extra: str):
    return load_config("cpu-quick", TINY + ["model.fidelity=reference", *extra])


def test_reference_config_implies_wrap_and_all_views_and_rejects_conflicts():
    cfg = _reference_cfg()  # cpu-quick itself says border: valid
    assert cfg.selfpatch.border == "wrap" and cfg.dino.center_views == "all"
    with pytest.raises(SelfPatchError, match="selfpatch.border='valid' contradicts"):
        _reference_cfg("selfpatch.border=valid")
    with pytest.raises(SelfPatchError, match="model.fidelity"):
        load_config("cpu-quick", ["model.fidelity=exact"])
    ref = load_config("paper-imagenet-vit-s16-reference")
    assert ref.model.fidelity == "reference" and ref.selfpatch.border == "wrap"


def test_reference_selfpatch_routes_raw_tokens_through_h_norm():
    torch.manual_seed(2)
    ts = build_teacher_student(_reference_cfg())
    student = ts.student
    vit = student.backbone.vit
    assert isinstance(vit.norm, torch.nn.Identity)
    views = [torch.randn(3, 3, 32, 32) for _ in range(2)] + [torch.randn(3, 3, 16, 16)] * 2
    student.eval()  # no drop-path, so the hand pass below sees the same network
    with torch.no_grad():
        image_logits, patch_logits, _ = student(views, _group_by_size(views), n_patch_views=4)
        for v, view in enumerate(views):
            # Raw last-block tokens, written out: patch embedding, DINO's position resizing,
            # the blocks, no final norm.
            x = vit.patch_embed(view)
            x = reference_pos_embed(vit, x)
            for block in vit.blocks:
                x = block(x)
            expected_patch = student.patch_head(student.aggregator.norm(x))
            torch.testing.assert_close(patch_logits[v], expected_patch, rtol=1e-4, atol=1e-5)
            expected_image = student.image_head(student.aggregator(x, None))
            torch.testing.assert_close(image_logits[v], expected_image, rtol=1e-4, atol=1e-5)


def test_reference_dino_keeps_the_final_norm():
    ts = build_teacher_student(_reference_cfg("method=dino"))
    assert isinstance(ts.student.backbone.vit.norm, torch.nn.LayerNorm)
    assert ts.student.backbone.spec.pos_resize == "reference"


def test_reference_warmup_reaches_the_peak_on_its_last_step():
    iters, warm_epochs = 5, 2
    cfg = _reference_cfg(f"optim.warmup_epochs={warm_epochs}", "optim.epochs=4")
    peak = cfg.optim.base_lr * cfg.optim.batch_size / 256
    n_warm = iters * warm_epochs
    ref = build_schedules(cfg, iters, 1).lr
    np.testing.assert_allclose(ref[:n_warm], [peak * i / (n_warm - 1) for i in range(n_warm)])
    default = build_schedules(load_config("cpu-quick", TINY + [
        f"optim.warmup_epochs={warm_epochs}", "optim.epochs=4"]), iters, 1).lr
    np.testing.assert_allclose(default[:n_warm], [peak * i / n_warm for i in range(n_warm)])
    # The cosine part is the same: it starts at the peak on the first step after warm-up.
    np.testing.assert_allclose(ref[n_warm:], default[n_warm:])
    assert ref[n_warm] == pytest.approx(peak)


def test_reference_head_normalises_with_eps_1e12():
    for eps in (1e-12, 1e-6):
        head = DINOHead(3, 5, hidden_dim=6, bottleneck_dim=4, l2_eps=eps)
        last = [m for m in head.mlp if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(1e-8)  # every bottleneck vector is (1e-8,) * 4: norm 2e-8 < 1e-6
            out = head(torch.randn(2, 3))[0]
        # eps 1e-12: a unit vector (0.5,) * 4; eps 1e-6: the vector divided by 1e-6 instead.
        bottleneck = torch.full((4,), 0.5) if eps == 1e-12 else torch.full((4,), 1e-8 / 1e-6)
        torch.testing.assert_close(out, head.last_layer.weight.detach() @ bottleneck)
    assert build_teacher_student(_reference_cfg()).student.image_head.l2_eps == 1e-12


@pytest.mark.parametrize("method", ["dino+selfpatch", "dino"])
def test_reference_mode_trains_resumes_and_exports(images, tmp_path, method):
    extra = ["model.fidelity=reference", f"method={method}"]
    full = pretrain(cfg_for(images, tmp_path / "full", "optim.epochs=2", *extra))
    part = pretrain(cfg_for(images, tmp_path / "part", "optim.epochs=2", "optim.max_steps=2",
                            *extra))
    part = pretrain(cfg_for(images, tmp_path / "part", "optim.epochs=2", *extra), resume=True)
    losses = [r["loss"] for r in read_metrics(full)]
    assert all(math.isfinite(v) for v in losses)
    assert losses == [r["loss"] for r in read_metrics(part)]
    # Evaluation builds the same backbone (no final norm for SelfPatch, DINO's resizing)
    # from the checkpoint and from the safetensors export.
    from_ckpt = load_backbone(full)
    path, spec = export_backbone(full)
    from_export = load_backbone(path)
    assert spec.pos_resize == from_export.spec.pos_resize == "reference"
    x = torch.randn(2, 3, 24, 40)  # a grid the stored table does not have
    with torch.no_grad():
        torch.testing.assert_close(from_export(x), from_ckpt(x))
    assert isinstance(from_ckpt.vit.norm, torch.nn.Identity) is (method == "dino+selfpatch")
