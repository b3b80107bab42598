"""``selfpatch finetune seg``: the Semantic FPN head, its schedule, and a run that learns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from selfpatch.errors import SelfPatchError
from selfpatch.finetune.loop import parameter_groups
from selfpatch.finetune.seg import FinetuneSegSettings, finetune_seg, lr_at, settings_from
from selfpatch.finetune.semantic_fpn import SemanticFPN, SemanticFPNHead
from selfpatch.models.backbone import ViTBackbone, make_backbone_spec
from selfpatch.models.pyramid import ViTFeaturePyramid

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_data import make_seg  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_head_has_mmseg_fpnhead_stages_and_outputs_stride_4():
    head = SemanticFPNHead(num_classes=5, in_channels=16, channels=8)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in h) for h in head.scale_heads]
    ups = [sum(isinstance(m, torch.nn.Upsample) for m in h) for h in head.scale_heads]
    assert convs == [1, 1, 2, 3] and ups == [0, 1, 2, 3]  # level i: max(1, i) stages
    feats = {str(i): torch.randn(2, 16, 32 // 2 ** i, 48 // 2 ** i) for i in range(4)}
    assert head(feats).shape == (2, 5, 32, 48)
    model = SemanticFPN(ViTFeaturePyramid(ViTBackbone(make_backbone_spec("vit_tiny", 16, 64)),
                                          out_channels=16), num_classes=5)
    assert model(torch.randn(1, 3, 64, 96)).shape == (1, 5, 64, 96)


def test_schedule_and_weight_decay_groups():
    s = FinetuneSegSettings(iters=100, lr=1.0, warmup_iters=10)
    assert lr_at(0, s) == pytest.approx(1e-6)
    assert lr_at(5, s) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert lr_at(10, s) == pytest.approx(0.9) and lr_at(55, s) == pytest.approx(0.45)
    backbone = ViTBackbone(make_backbone_spec("vit_tiny", 16, 64, class_token=True))
    groups = parameter_groups(backbone, 0.01)
    no_decay = {id(p) for p in groups[1]["params"]}
    named = dict(backbone.named_parameters())
    for name in ("vit.pos_embed", "vit.cls_token", "vit.norm.weight", "vit.blocks.0.attn.qkv.bias"):
        assert id(named[name]) in no_decay, name
    assert id(named["vit.blocks.0.attn.qkv.weight"]) not in no_decay
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert settings_from("paper").iters == 40000 and settings_from("cpu", iters=5).iters == 5
    with pytest.raises(SelfPatchError, match="--preset"):
        settings_from("gpu")


def test_finetuning_learns_the_coloured_rectangles(tmp_path):
    root = make_seg(tmp_path / "seg", num_train=8, num_val=4, size=64, num_classes=3)
    settings = FinetuneSegSettings(image_size=64, iters=40, batch_size=4, lr=1e-3,
                                   warmup_iters=4)
    trained = finetune_seg("random:vit_tiny:16", root, 3, settings, log=None,
                           save_to=(tmp_path / "ft", 0))
    untrained = finetune_seg("random:vit_tiny:16", root, 3,
                             FinetuneSegSettings(image_size=64, iters=1, batch_size=1,
                                                 lr=1e-9, warmup_iters=1), log=None)
    assert trained["mIoU"] > untrained["mIoU"] + 20, (trained["mIoU"], untrained["mIoU"])
    assert trained["num_train"] == 8 and trained["num_val"] == 4
    assert len(trained["per_class"]["IoU"]) == 3
    with pytest.raises(SelfPatchError, match="multiple of 32"):
        finetune_seg("random:vit_tiny:16", root, 3, FinetuneSegSettings(image_size=48),
                     log=None)
    # The kept model is the fine-tuned one: rebuilt from the file, it scores the same.
    from safetensors.torch import load_file

    from selfpatch.evaluate.seg import list_seg_pairs
    from selfpatch.finetune.seg import evaluate_model
    from selfpatch.models.loading import load_backbone

    saved = Path(trained["model_file"])
    assert saved == tmp_path / "ft" / "models" / "00-random_vit_tiny_16.safetensors"
    model = SemanticFPN(ViTFeaturePyramid(load_backbone("random:vit_tiny:16")), 3)
    model.load_state_dict(load_file(str(saved)))
    again = evaluate_model(model, list_seg_pairs(root, "val"), 3, settings, torch.device("cpu"))
    assert again["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-4)
    # The same file is a backbone source for every eval command: its tokens are those of the
    # fine-tuned model's backbone, not of the random weights it started from.
    x = torch.rand(2, 3, 64, 64)
    tuned = load_backbone(saved)
    start = load_backbone("random:vit_tiny:16")
    with torch.no_grad():
        expected = model.pyramid.backbone.eval()(x)
        got = tuned(x)
        assert torch.equal(got, expected)
        assert (got - start(x)).abs().max() > 1e-3


def test_cli_writes_a_report_row_per_checkpoint(tmp_path, capsys):
    from selfpatch.cli import main

    root = make_seg(tmp_path / "seg", num_train=4, num_val=2, size=64, num_classes=3)
    out = tmp_path / "ft"
    assert main(["finetune", "seg", "--checkpoint", "random:vit_tiny:16", "--checkpoint",
                 "random:vit_tiny:8", "--seg-root", str(root), "--num-classes", "3",
                 "--image-size", "64", "--iters", "2", "--batch-size", "2",
                 "--threads", "1", "--out", str(out)]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    rows = json.loads((out / "report.json").read_text())
    assert [r["source"] for r in rows] == ["random:vit_tiny:16", "random:vit_tiny:8"]
    md = (out / "report.md").read_text()
    assert "| random:vit_tiny:16 |" in md and "| random:vit_tiny:8 |" in md
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "00-random_vit_tiny_16.safetensors", "01-random_vit_tiny_8.safetensors"]
    assert main(["finetune", "seg", "--checkpoint", "random:vit_tiny:16", "--seg-root",
                 str(root), "--num-classes", "3", "--image-size", "64", "--iters", "1",
                 "--batch-size", "1", "--threads", "1", "--out", str(tmp_path / "ft2"),
                 "--no-save-models"]) == 0
    assert not (tmp_path / "ft2" / "models").exists()
    assert main(["finetune", "seg", "--checkpoint", "random:vit_tiny:16", "--seg-root",
                 str(root), "--num-classes", "2", "--iters", "1"]) == 2  # label 3 > 2 classes
    assert "outside" in capsys.readouterr().err


def test_safetensors_without_backbone_metadata_are_refused_in_one_line(tmp_path):
    from safetensors.torch import save_file

    from selfpatch.models.loading import load_backbone

    plain, old = tmp_path / "plain.safetensors", tmp_path / "old-finetuned.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    save_file({"w": torch.zeros(1)}, str(old), metadata={"format": "selfpatch-finetuned"})
    with pytest.raises(SelfPatchError, match="export it with `selfpatch export`"):
        load_backbone(plain)
    with pytest.raises(SelfPatchError, match="older selfpatch; fine-tune it again"):
        load_backbone(old)
