"""Multi-scale feature maps from a plain ViT, for FPN-style detection and segmentation heads.

Two adapters, both returning an ``OrderedDict`` of ``(B, C, H / s, W / s)`` maps at strides
``s`` = 4, 8, 16, 32 (keys ``"0"``..``"3"``) plus ``"pool"`` (stride 64, max-pooled from the
last), the interface of torchvision's detection models (``out_channels`` attribute):

- ``simple`` (ViTDet, Li et al. 2022): every level from the **last** block's map (stride
  ``p``), up-sampled by 2x2 transposed convolutions (each halving the channels) or
  down-sampled by max-pooling, then a 1x1 and a 3x3 convolution, each with a channel
  LayerNorm, to ``out_channels`` (detectron2's ``SimpleFeaturePyramid``). The default:
  ViTDet showed it matches a multi-level pyramid for plain ViTs, and it uses only the
  representation pre-training produced.
- ``multilevel`` (the paper's detection/segmentation setting, after BEiT/XCiT): the maps of
  blocks ``n/4, n/2, 3n/4, n`` resampled to strides 4, 8, 16, 32 the same way, then the same
  1x1 + 3x3 projection (the paper feeds them to mmdet's FPN neck, which this projection
  stands in for).

Written here because neither timm nor torchvision ships a ViT pyramid (timm's
``forward_intermediates`` gives the block maps used by ``multilevel``).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from selfpatch.errors import SelfPatchError

STRIDES = (4, 8, 16, 32)
PYRAMIDS = ("simple", "multilevel")


def _resampler(dim: int, factor: float) -> tuple[nn.Module, int]:
    """``(B, dim, h, w) -> (B, dim', h * factor, w * factor)`` for a power-of-two ``factor``,
    and ``dim'``: as ViTDet, each 2x up-sampling is a 2x2 transposed convolution that halves
    the channels (LayerNorm + GELU between two of them); down-sampling is max-pooling."""
    steps = int(round(math.log2(factor)))
    if 2.0 ** steps != factor:
        raise SelfPatchError(f"a patch size whose ratio to stride {factor} is not a power of 2")
    if steps == 0:
        return nn.Identity(), dim
    if steps < 0:
        return nn.MaxPool2d(kernel_size=2 ** -steps, stride=2 ** -steps), dim
    layers: list[nn.Module] = []
    for i in range(steps):
        if i:
            layers += [LayerNorm2d(dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        dim //= 2
    return nn.Sequential(*layers), dim


class ViTFeaturePyramid(nn.Module):
    """A ViT (``ViTBackbone``) as a multi-scale backbone: ``images -> OrderedDict`` of maps.

    Args:
        backbone: a :class:`~selfpatch.models.backbone.ViTBackbone` (pre-trained here,
            exported, or a timm ViT built by ``make_backbone_spec``); trained with the head.
        kind: ``simple`` (ViTDet) or ``multilevel`` (the paper's setting); module doc.
        out_channels: channels of every level (256 for torchvision's heads).

    Input sides must be multiples of 32 (the deepest level) and of the patch size.
    """

    def __init__(self, backbone: nn.Module, kind: str = "simple", out_channels: int = 256) -> None:
        super().__init__()
        if kind not in PYRAMIDS:
            raise SelfPatchError(f"pyramid {kind!r} is not one of {PYRAMIDS}")
        if not getattr(backbone, "has_global_attention", False):
            raise SelfPatchError("the feature pyramid needs a plain ViT backbone (a Swin is "
                                 "hierarchical already: use its stage outputs instead)")
        self.backbone, self.kind, self.out_channels = backbone, kind, out_channels
        p, dim = backbone.patch_size, backbone.embed_dim
        depth = len(backbone.vit.blocks)
        self.block_indices = ([depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]
                              if kind == "multilevel" else [depth - 1])
        resamplers = [_resampler(dim, p / s) for s in STRIDES]
        self.resample = nn.ModuleList(r for r, _ in resamplers)
        self.project = nn.ModuleList(nn.Sequential(
            nn.Conv2d(d, out_channels, 1, bias=False), LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            LayerNorm2d(out_channels)) for _, d in resamplers)

    def block_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, D, H / p, W / p)`` token maps of the chosen blocks (the last one after the
        backbone's final norm, as the token features used everywhere else)."""
        h, w = images.shape[-2:]
        if h % 32 or w % 32:
            raise SelfPatchError(f"input {h}x{w}: the pyramid needs sides that are multiples "
                                 "of 32; pad or resize the images")
        gh, gw = self.backbone.grid_shape(h, w)
        if self.kind == "simple":
            _, tokens = self.backbone.forward_tokens(images)
            return [tokens.transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)]
        return list(self.backbone.vit.forward_intermediates(
            images, indices=self.block_indices, norm=False, output_fmt="NCHW",
            intermediates_only=True))

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.block_maps(images)
        if len(maps) == 1:
            maps = maps * len(STRIDES)
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, (x, resample, project) in enumerate(zip(maps, self.resample, self.project)):
            out[str(i)] = project(resample(x))
        out["pool"] = F.max_pool2d(out[str(len(STRIDES) - 1)], kernel_size=1, stride=2)
        return out
