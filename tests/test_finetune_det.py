"""``selfpatch finetune det``: COCO data, AP bookkeeping, Mask R-CNN end to end, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfpatch.data.builtin.coco import coco_instances
from selfpatch.errors import SelfPatchError

pytest.importorskip("pycocotools")
from selfpatch.finetune.det import (  # noqa: E402
    CocoDetection,
    FinetuneDetSettings,
    coco_ap,
    finetune_det,
    predict,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def make_coco(root: Path, n: int = 4, size: int = 64, seed: int = 0) -> dict[str, Path]:
    """Built-in-like scenes (coloured rectangles, 2 classes) and their COCO json per split."""
    rng = np.random.default_rng(seed)
    out = {}
    for folder in ("training", "validation"):
        for kind in ("images", "annotations", "instances"):
            (root / "seg" / kind / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
            inst = np.zeros((size, size), np.uint8)
            sem = np.zeros((size, size), np.uint8)
            for k, (cls, colour) in enumerate([(1, (220, 40, 40)), (2, (40, 220, 40))], 1):
                y, x = rng.integers(0, size - 24, 2)
                inst[y:y + 20, x:x + 20], sem[y:y + 20, x:x + 20] = k, cls
                img[y:y + 20, x:x + 20] = colour
            stem = f"img_{i:03d}"
            Image.fromarray(img).save(root / "seg" / "images" / folder / f"{stem}.jpg",
                                      quality=95)
            Image.fromarray(sem).save(root / "seg" / "annotations" / folder / f"{stem}.png")
            Image.fromarray(inst).save(root / "seg" / "instances" / folder / f"{stem}.png")
        coco = coco_instances(root / "seg", folder)
        coco["categories"] = coco["categories"][:2]  # the two classes used here
        path = root / f"instances_{folder}.json"
        path.write_text(json.dumps(coco))
        out[folder] = path
    return out


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    files = make_coco(root)
    return (CocoDetection(files["training"], root / "seg" / "images" / "training"),
            CocoDetection(files["validation"], root / "seg" / "images" / "validation"))


def test_targets_are_the_annotations(coco):
    train, _ = coco
    assert len(train) == 4 and train.num_classes == 2
    image, target = train[0]
    assert image.shape == (3, 64, 64) and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert target["labels"].tolist() == [1, 2]
    for box, mask in zip(target["boxes"], target["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        # xyxy: the right/bottom edges are one past the last pixel (COCO's x + w)
        assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1,
                                ys.max().item() + 1]


def test_perfect_predictions_score_100_and_none_score_0(coco):
    _, val = coco
    perfect = []
    from pycocotools import mask as mask_utils

    for i in range(len(val)):
        _, target = val[i]
        for box, label, mask in zip(target["boxes"].tolist(), target["labels"].tolist(),
                                    target["masks"].numpy()):
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode()
            perfect.append({"image_id": target["image_id"], "category_id": label,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "score": 1.0, "segmentation": rle})
    scores = coco_ap(val.coco, perfect)
    assert scores["box_AP"] == pytest.approx(100) and scores["mask_AP"] == pytest.approx(100)
    assert set(coco_ap(val.coco, []).values()) == {0.0}


def test_mask_rcnn_trains_and_predicts_in_coco_format(coco, tmp_path):
    train, val = coco
    settings = FinetuneDetSettings(min_sizes=(64,), max_size=64, test_size=64, iters=2,
                                   batch_size=2, rois_per_image=32, rpn_post_nms_train=50,
                                   detections_per_image=5)
    result = finetune_det("random:vit_tiny:16", train, val, settings, log=None,
                          save_to=(tmp_path, 3))
    for key in ("box_AP", "box_AP50", "mask_AP", "mask_AP50"):
        assert 0.0 <= result[key] <= 100.0
    assert np.isfinite(result["train_loss"]) and result["num_val"] == 4
    from safetensors.torch import load_file

    from selfpatch.finetune.det import build_model
    from selfpatch.models.loading import load_backbone

    model = build_model(load_backbone("random:vit_tiny:16"), 2, settings)
    # the kept file is the whole fine-tuned detector: it loads strictly into a fresh one
    assert result["model_file"] == str(tmp_path / "models" / "03-random_vit_tiny_16.safetensors")
    model.load_state_dict(load_file(result["model_file"]))
    dets = predict(model, val, settings, torch.device("cpu"))
    assert all(d["category_id"] in (1, 2) and len(d["bbox"]) == 4 for d in dets)
    assert len(dets) <= 5 * len(val)
    # ... and its backbone alone loads as an eval source, with the detector's weights
    tuned = load_backbone(result["model_file"])
    vit_keys = {k.split(".vit.", 1)[1]: v for k, v in model.state_dict().items() if ".vit." in k}
    assert tuned.vit.state_dict().keys() == vit_keys.keys()
    assert all(torch.equal(v, vit_keys[k]) for k, v in tuned.vit.state_dict().items())


def test_head_widths_follow_the_settings():
    from selfpatch.finetune.det import build_model, settings_from
    from selfpatch.models.loading import load_backbone

    def widths(model):
        mask_convs = [m for m in model.roi_heads.mask_head.modules()
                      if isinstance(m, torch.nn.Conv2d)]
        return (model.backbone.out_channels, model.roi_heads.box_head.fc6.in_features,
                model.roi_heads.box_head.fc7.out_features, len(mask_convs),
                mask_convs[0].out_channels)

    backbone = load_backbone("random:vit_tiny:16")
    # torchvision's own Mask R-CNN heads at the defaults (the paper preset) ...
    assert widths(build_model(backbone, 3, settings_from("paper"))) == (256, 256 * 7 * 7, 1024,
                                                                         4, 256)
    # ... and the halved heads of the cpu preset, which still run end to end
    cpu = build_model(backbone, 3, settings_from("cpu")).eval()
    assert widths(cpu) == (128, 128 * 7 * 7, 512, 2, 128)
    with torch.no_grad():
        (out,) = cpu([torch.rand(3, 64, 64)])
    assert out["masks"].shape[1:] == (1, 64, 64)


def test_bad_input_is_one_line(tmp_path, coco, capsys):
    from selfpatch.cli import main

    train, val = coco
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SelfPatchError, match="is not JSON"):
        CocoDetection(bad, tmp_path)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(SelfPatchError, match="lacks annotations, categories"):
        CocoDetection(bad, tmp_path)
    with pytest.raises(SelfPatchError, match="does not exist"):
        CocoDetection(tmp_path / "missing.json", tmp_path)
    with pytest.raises(SelfPatchError, match="plain ViT"):
        finetune_det("random:swin_tiny", train, val, FinetuneDetSettings(iters=1), log=None)
    args = ["finetune", "det", "--checkpoint", "random:vit_tiny:16", "--train-json",
            str(train.path), "--train-images", str(train.images), "--val-json",
            str(val.path), "--val-images", str(val.images)]
    assert main([*args, "--num-classes", "80"]) == 2
    assert "80 but" in capsys.readouterr().err
