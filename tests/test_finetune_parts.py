"""Pieces for downstream fine-tuning (issue 13): the ViT feature pyramid and the COCO writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from selfpatch.data.builtin.coco import (
    coco_instances,
    ensure_coco_instances,
    mask_bbox,
    mask_to_rle,
)
from selfpatch.errors import SelfPatchError
from selfpatch.models.backbone import SwinBackbone, ViTBackbone, make_backbone_spec
from selfpatch.models.pyramid import ViTFeaturePyramid

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


# ----------------------------------------------------------------------------- pyramid
@pytest.mark.parametrize("kind", ["simple", "multilevel"])
@pytest.mark.parametrize("patch", [8, 16])
def test_pyramid_levels_have_strides_4_to_64(kind, patch):
    torch.manual_seed(0)
    pyramid = ViTFeaturePyramid(ViTBackbone(make_backbone_spec("vit_tiny", patch, 64)), kind,
                                out_channels=32)
    for h, w in [(64, 64), (96, 160), (224, 224)]:
        with torch.no_grad():
            out = pyramid(torch.randn(2, 3, h, w))
        assert list(out) == ["0", "1", "2", "3", "pool"]
        for key, stride in zip(out, (4, 8, 16, 32, 64)):
            assert tuple(out[key].shape) == (2, 32, -(-h // stride), -(-w // stride)), key
    assert pyramid.out_channels == 32
    with pytest.raises(SelfPatchError, match="multiples of 32"):
        pyramid(torch.randn(1, 3, 48, 64))


def test_multilevel_pyramid_uses_four_blocks_and_simple_the_last():
    backbone = ViTBackbone(make_backbone_spec("vit_tiny", 16, 64))
    assert ViTFeaturePyramid(backbone, "multilevel").block_indices == [2, 5, 8, 11]
    simple = ViTFeaturePyramid(backbone, "simple")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        (last,) = simple.block_maps(x)
        tokens = backbone(x)  # (B, N, D) after the final norm
    torch.testing.assert_close(last.flatten(2).transpose(1, 2), tokens)
    with pytest.raises(SelfPatchError, match="not one of"):
        ViTFeaturePyramid(backbone, "fpn")
    with pytest.raises(SelfPatchError, match="plain ViT"):
        ViTFeaturePyramid(SwinBackbone(make_backbone_spec("swin_tiny", img_size=64)))


def test_pyramid_drives_torchvision_mask_rcnn():
    from torchvision.models.detection import MaskRCNN

    torch.manual_seed(1)
    pyramid = ViTFeaturePyramid(ViTBackbone(make_backbone_spec("vit_tiny", 16, 64)), "simple",
                                out_channels=32)
    model = MaskRCNN(pyramid, num_classes=3, min_size=64, max_size=64)
    target = {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2]),
              "masks": torch.zeros(1, 64, 64, dtype=torch.uint8)}
    target["masks"][0, 6:40, 4:30] = 1
    losses = model([torch.rand(3, 64, 64)], [target])
    assert {"loss_classifier", "loss_box_reg", "loss_mask"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert pyramid.backbone.vit.patch_embed.proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        (pred,) = model([torch.rand(3, 64, 64)])
    assert set(pred) == {"boxes", "labels", "scores", "masks"}


# ----------------------------------------------------------------------------- COCO writer
def _random_masks():
    rng = np.random.default_rng(0)
    yield np.zeros((5, 7), bool)
    yield np.ones((5, 7), bool)
    first = np.zeros((6, 4), bool)
    first[0, 0] = True  # a run of foreground first: RLE starts with a 0-length background
    yield first
    for _ in range(5):
        yield rng.random((rng.integers(1, 20), rng.integers(1, 20))) > 0.6


def test_rle_round_trips_through_pycocotools():
    for mask in _random_masks():
        rle = mask_to_rle(mask)
        assert sum(rle["counts"]) == mask.size
        compressed = mask_utils.frPyObjects(rle, *rle["size"])
        decoded = mask_utils.decode(compressed).astype(bool)
        np.testing.assert_array_equal(decoded, mask)
        assert mask_utils.area(compressed) == mask.sum()


def test_bbox_is_the_tight_pixel_box():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 7] = mask[4, 3] = True
    ys, xs = [], []
    for y in range(10):
        for x in range(12):
            if mask[y, x]:
                ys.append(y)
                xs.append(x)
    assert mask_bbox(mask) == [min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1]


def _scene_folder(tmp_path):
    """Two 16x16 'scenes' in the built-in seg layout: instance and semantic PNGs."""
    seg = tmp_path / "seg"
    instances = []
    for i in range(2):
        for kind in ("images", "annotations", "instances"):
            (seg / kind / "validation").mkdir(parents=True, exist_ok=True)
            (seg / kind / "training").mkdir(parents=True, exist_ok=True)
        inst = np.zeros((16, 16), np.uint8)
        sem = np.zeros((16, 16), np.uint8)
        inst[2:8, 3:9], sem[2:8, 3:9] = 1, 4 + i
        inst[6:14, 7:15], sem[6:14, 7:15] = 2, 9  # drawn later: occludes part of object 1
        inst[0, 0], sem[0, 0] = 3, 0  # a pixel of an unlabelled object: skipped
        name = f"fs_val_{i:06d}"
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(seg / "images" / "validation" /
                                                              f"{name}.jpg")
        Image.fromarray(sem).save(seg / "annotations" / "validation" / f"{name}.png")
        Image.fromarray(inst).save(seg / "instances" / "validation" / f"{name}.png")
        instances.append((inst, sem))
    return seg, instances


def test_coco_instances_match_the_instance_masks(tmp_path):
    seg, scenes = _scene_folder(tmp_path)
    coco = coco_instances(seg, "validation")
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 4
    for ann in coco["annotations"]:
        inst, sem = scenes[ann["image_id"] - 1]
        k = 1 if ann["category_id"] in (4, 5) else 2
        mask = inst == k
        decoded = mask_utils.decode(mask_utils.frPyObjects(ann["segmentation"], 16, 16))
        np.testing.assert_array_equal(decoded.astype(bool), mask)
        assert ann["area"] == mask.sum() and ann["category_id"] == sem[mask][0]
        assert ann["bbox"] == mask_bbox(mask) and ann["iscrowd"] == 0
    assert coco["annotations"][0]["area"] == 6 * 6 - 2 * 2  # occluded corner removed


def test_coco_json_loads_and_scores_perfect_100_and_mislabelled_0(tmp_path):
    seg, _ = _scene_folder(tmp_path)
    paths = ensure_coco_instances(tmp_path)
    gt = COCO(str(paths["validation"]))
    truth = json.loads(paths["validation"].read_text())["annotations"]
    for iou in ("bbox", "segm"):
        perfect = [{"image_id": a["image_id"], "category_id": a["category_id"],
                    "bbox": a["bbox"], "score": 1.0,
                    "segmentation": mask_utils.frPyObjects(a["segmentation"], 16, 16)}
                   for a in truth]
        for det in perfect:
            det["segmentation"]["counts"] = det["segmentation"]["counts"].decode()
        evaluator = COCOeval(gt, gt.loadRes(perfect), iou)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(1.0)  # AP@[.5:.95] = 100
        wrong = [dict(d, category_id=1 if d["category_id"] != 1 else 2) for d in perfect]
        evaluator = COCOeval(gt, gt.loadRes(wrong), iou)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(0.0)  # nothing right: AP 0
    assert ensure_coco_instances(tmp_path) == paths  # second call reuses the files


# ----------------------------------------------------------------------------- converters
# The layouts as mmsegmentation's VisionTransformer, mmpretrain's VisionTransformer (what
# mmdet 3.x builds) and detectron2's ViTDet ViT name their parameters (from their source; none
# of them installs here without compiling mmcv / detectron2), for ViT-Ti/16 (D = 192, MLP 768)
# with a 6x6 position table.
D, MLP, N = 192, 768, 36
MMSEG_BLOCK = {"ln1.weight": (D,), "ln1.bias": (D,), "attn.attn.in_proj_weight": (3 * D, D),
               "attn.attn.in_proj_bias": (3 * D,), "attn.attn.out_proj.weight": (D, D),
               "attn.attn.out_proj.bias": (D,), "ln2.weight": (D,), "ln2.bias": (D,),
               "ffn.layers.0.0.weight": (MLP, D), "ffn.layers.0.0.bias": (MLP,),
               "ffn.layers.1.weight": (D, MLP), "ffn.layers.1.bias": (D,)}
# mmpretrain's TransformerEncoderLayer: ln1, its own MultiheadAttention (qkv, proj), ln2, mmcv FFN
MMPRETRAIN_BLOCK = {"ln1.weight": (D,), "ln1.bias": (D,), "attn.qkv.weight": (3 * D, D),
                    "attn.qkv.bias": (3 * D,), "attn.proj.weight": (D, D), "attn.proj.bias": (D,),
                    "ln2.weight": (D,), "ln2.bias": (D,), "ffn.layers.0.0.weight": (MLP, D),
                    "ffn.layers.0.0.bias": (MLP,), "ffn.layers.1.weight": (D, MLP),
                    "ffn.layers.1.bias": (D,)}
D2_BLOCK = {"norm1.weight": (D,), "norm1.bias": (D,), "attn.qkv.weight": (3 * D, D),
            "attn.qkv.bias": (3 * D,), "attn.proj.weight": (D, D), "attn.proj.bias": (D,),
            "norm2.weight": (D,), "norm2.bias": (D,), "mlp.fc1.weight": (MLP, D),
            "mlp.fc1.bias": (MLP,), "mlp.fc2.weight": (D, MLP), "mlp.fc2.bias": (D,)}


def _expected_mmseg() -> dict[str, tuple]:
    keys = {"cls_token": (1, 1, D), "pos_embed": (1, 1 + N, D),
            "patch_embed.projection.weight": (D, 3, 16, 16), "patch_embed.projection.bias": (D,),
            "ln1.weight": (D,), "ln1.bias": (D,)}
    for i in range(12):
        keys.update({f"layers.{i}.{k}": v for k, v in MMSEG_BLOCK.items()})
    return keys


def _expected_mmdet() -> dict[str, tuple]:
    keys = {"cls_token": (1, 1, D), "pos_embed": (1, 1 + N, D),
            "patch_embed.projection.weight": (D, 3, 16, 16), "patch_embed.projection.bias": (D,),
            "ln1.weight": (D,), "ln1.bias": (D,)}
    for i in range(12):
        keys.update({f"layers.{i}.{k}": v for k, v in MMPRETRAIN_BLOCK.items()})
    return {f"backbone.{k}": v for k, v in keys.items()}


def _expected_detectron2() -> dict[str, tuple]:
    keys = {"backbone.net.pos_embed": (1, 1 + N, D),
            "backbone.net.patch_embed.proj.weight": (D, 3, 16, 16),
            "backbone.net.patch_embed.proj.bias": (D,)}
    for i in range(12):
        keys.update({f"backbone.net.blocks.{i}.{k}": v for k, v in D2_BLOCK.items()})
    return keys


@pytest.mark.parametrize("class_token", [True, False])
def test_converted_keys_and_shapes_match_mmseg_mmdet_and_detectron2(class_token):
    from selfpatch.models.convert import convert

    vit = ViTBackbone(make_backbone_spec("vit_tiny", 16, 96, class_token=class_token)).vit
    state = vit.state_dict()
    mm = convert(state, "mmseg")
    assert {k: tuple(v.shape) for k, v in mm.items()} == _expected_mmseg()
    d2 = convert(state, "detectron2")
    assert set(d2) == {"model"}
    assert {k: tuple(v.shape) for k, v in d2["model"].items()} == _expected_detectron2()
    # Values move, unchanged: a block weight, the qkv projection, the position table.
    torch.testing.assert_close(mm["layers.3.attn.attn.in_proj_weight"],
                               state["blocks.3.attn.qkv.weight"])
    torch.testing.assert_close(d2["model"]["backbone.net.blocks.3.mlp.fc2.weight"],
                               state["blocks.3.mlp.fc2.weight"])
    mmdet = convert(state, "mmdet")
    assert set(mmdet) == {"state_dict"}
    assert {k: tuple(v.shape) for k, v in mmdet["state_dict"].items()} == _expected_mmdet()
    torch.testing.assert_close(mmdet["state_dict"]["backbone.layers.3.attn.qkv.weight"],
                               state["blocks.3.attn.qkv.weight"])
    torch.testing.assert_close(mmdet["state_dict"]["backbone.ln1.weight"], state["norm.weight"])
    pos = mm["pos_embed"]
    if class_token:
        torch.testing.assert_close(pos, state["pos_embed"])
    else:  # a zero [CLS] slot in front of the patch table
        assert torch.equal(pos[:, 0], torch.zeros(1, D))
        torch.testing.assert_close(pos[:, 1:], state["pos_embed"])
        assert torch.equal(mm["cls_token"], torch.zeros(1, 1, D))


def test_export_cli_writes_converted_files(tmp_path, capsys):
    from safetensors.torch import save_file

    from selfpatch.cli import main
    from selfpatch.models.export import write_backbone

    backbone = ViTBackbone(make_backbone_spec("vit_tiny", 16, 96))
    export = write_backbone(backbone.vit.state_dict(), backbone.spec, tmp_path / "b.safetensors")
    assert main(["export", str(export), "--format", "mmseg"]) == 0
    written = tmp_path / "b_mmseg.pth"
    assert f"wrote {written}" in capsys.readouterr().out
    assert "layers.0.ln1.weight" in torch.load(written, weights_only=True)
    assert main(["export", str(export), "--format", "detectron2",
                 "--out", str(tmp_path / "d2.pth")]) == 0
    assert "model" in torch.load(tmp_path / "d2.pth", weights_only=True)
    assert main(["export", str(export), "--format", "mmdet"]) == 0
    mmdet = torch.load(tmp_path / "b_mmdet.pth", weights_only=True)
    assert "backbone.layers.0.attn.qkv.weight" in mmdet["state_dict"]
    swin = tmp_path / "swin.safetensors"
    save_file({"layers.0.blocks.0.norm1.weight": torch.ones(3)}, str(swin))
    assert main(["export", str(swin), "--format", "mmseg"]) == 2
    assert "only plain ViT" in capsys.readouterr().err
