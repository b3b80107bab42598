"""Backbone weights in the key layouts of other detection / segmentation stacks.

Input: a timm ViT state dict (what ``selfpatch export`` writes and ``ViTBackbone.vit``
holds). Output layouts, taken from those projects' own code (not installed here; the tests
check names and shapes against the layouts written down below):

- ``mmseg`` (mmsegmentation's ``VisionTransformer``, as its ``vit2mmseg.py`` converter maps
  timm keys): ``patch_embed.proj`` -> ``patch_embed.projection``, ``blocks.i`` ->
  ``layers.i``, ``norm1/2`` -> ``ln1/2``, ``attn.qkv.{weight,bias}`` ->
  ``attn.attn.in_proj_{weight,bias}``, ``attn.proj`` -> ``attn.attn.out_proj``,
  ``mlp.fc1`` -> ``ffn.layers.0.0``, ``mlp.fc2`` -> ``ffn.layers.1``, final ``norm`` ->
  ``ln1``; ``cls_token`` and ``pos_embed`` (with its [CLS] slot) unchanged.
- ``mmdet`` (mmdetection 3.x builds plain ViT backbones from mmpretrain:
  ``type='mmpretrain.VisionTransformer'``): mmpretrain's layout, which differs from
  mmseg's only in the attention (its own ``attn.qkv`` / ``attn.proj`` linears, not
  ``nn.MultiheadAttention``), keys prefixed ``backbone.`` in a ``{"state_dict": ...}``
  file as mmpretrain's own classifier checkpoints are, so mmdet loads it with
  ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``; final norm
  ``ln1`` kept (mmpretrain skips it with ``final_norm=False``).
- ``detectron2`` (ViTDet's ``ViT`` under ``SimpleFeaturePyramid``, keys prefixed
  ``backbone.net.`` in a ``{"model": ...}`` file): timm's block names; ``pos_embed`` with a
  [CLS] slot (``pretrain_use_cls_token=True``); no ``cls_token`` and no final norm (ViTDet
  has neither). Build it with ``pretrain_img_size`` = this run's ``data.global_size``.

A SelfPatch backbone has no [CLS] token: every layout gets a zero [CLS] slot in ``pos_embed``
(and mmseg/mmdet a zero ``cls_token``), which only a [CLS] output would read.
"""

from __future__ import annotations

import torch

from selfpatch.errors import SelfPatchError

FORMATS = ("mmseg", "mmdet", "detectron2")


def _with_cls_slot(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give ``pos_embed`` a [CLS] slot (zeros) and the model a zero ``cls_token`` if absent."""
    state = dict(state)
    if "cls_token" not in state:
        pos = state["pos_embed"]
        state["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
        state["cls_token"] = pos.new_zeros(1, 1, pos.shape[-1])
    return state


def to_mmseg(state: dict[str, torch.Tensor], attention: str = "mmcv") -> dict[str, torch.Tensor]:
    """timm ViT keys -> mmsegmentation ``VisionTransformer`` keys (module doc);
    ``attention="mmpretrain"`` keeps timm's ``qkv``/``proj`` names (mmpretrain's layout)."""
    out = {}
    for key, value in _with_cls_slot(state).items():
        if key.startswith("head"):
            continue
        if key.startswith("norm."):
            new = "ln1." + key[len("norm."):]
        elif key.startswith("patch_embed.proj."):
            new = key.replace("patch_embed.proj.", "patch_embed.projection.")
        elif key.startswith("blocks."):
            new = key
            if attention == "mmcv":  # torch.nn.MultiheadAttention inside mmcv's wrapper
                new = (new.replace("attn.qkv.weight", "attn.attn.in_proj_weight")
                       .replace("attn.qkv.bias", "attn.attn.in_proj_bias")
                       .replace("attn.proj.", "attn.attn.out_proj."))
            new = (new.replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.", "ffn.layers.1.")
                   .replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2."))
            new = "layers." + new[len("blocks."):]
        else:
            new = key
        out[new] = value
    return out


def to_mmdet(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """timm ViT keys -> ``{"state_dict": {"backbone.<mmpretrain key>": ...}}`` (module doc)."""
    return {"state_dict": {f"backbone.{k}": v
                           for k, v in to_mmseg(state, attention="mmpretrain").items()}}


def to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """timm ViT keys -> ``{"model": {"backbone.net.<key>": ...}}`` for ViTDet (module doc)."""
    keep = {k: v for k, v in _with_cls_slot(state).items()
            if k != "cls_token" and not k.startswith(("norm.", "head", "fc_norm."))}
    return {"model": {f"backbone.net.{k}": v for k, v in keep.items()}}


def convert(state: dict[str, torch.Tensor], fmt: str) -> dict:
    """``state`` in layout ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise SelfPatchError(f"--format {fmt!r} is not one of timm, {', '.join(FORMATS)}")
    if "pos_embed" not in state or not any(k.startswith("blocks.") for k in state):
        raise SelfPatchError(f"only plain ViT backbones convert to the {fmt} layout (a Swin "
                             "has none here); export it with --format timm")
    return {"mmseg": to_mmseg, "mmdet": to_mmdet, "detectron2": to_detectron2}[fmt](state)
