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
