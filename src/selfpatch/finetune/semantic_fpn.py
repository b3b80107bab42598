"""Semantic FPN (Kirillov et al., CVPR 2019): the segmentation head of the paper's Tab. 2.

:class:`SemanticFPNHead` follows mmsegmentation's ``FPNHead`` as the paper's config uses it
(``channels=128``, ``dropout_ratio=0.1``, BatchNorm): each pyramid level of stride
``4 * 2^i`` goes through ``max(1, i)`` stages of 3x3 convolution + BatchNorm + ReLU, each stage
followed by a 2x bilinear up-sampling while the map is coarser than stride 4; the levels are
summed, dropped out and classified by a 1x1 convolution. Logits are at stride 4; the caller
up-samples them to the label size. The pyramid (:class:`~selfpatch.models.pyramid.
ViTFeaturePyramid`, 256 channels) stands in for the paper's FPN neck.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from selfpatch.models.pyramid import STRIDES, ViTFeaturePyramid


class SemanticFPNHead(nn.Module):
    """``OrderedDict`` of 4 maps ``(B, in_channels, H / s, W / s)``, s = 4..32 ->
    ``(B, num_classes, H / 4, W / 4)`` logits."""

    def __init__(self, num_classes: int, in_channels: int = 256, channels: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for i in range(len(STRIDES)):
            stages: list[nn.Module] = []
            for k in range(max(1, i)):
                stages += [nn.Conv2d(in_channels if k == 0 else channels, channels, 3,
                                     padding=1, bias=False),
                           nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
                if i > 0:
                    stages.append(nn.Upsample(scale_factor=2, mode="bilinear",
                                              align_corners=False))
            self.scale_heads.append(nn.Sequential(*stages))
        self.dropout = nn.Dropout2d(dropout)
        self.classify = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: OrderedDict[str, torch.Tensor]) -> torch.Tensor:
        levels = [features[str(i)] for i in range(len(STRIDES))]
        out = self.scale_heads[0](levels[0])
        for head, x in zip(self.scale_heads[1:], levels[1:]):
            # Odd sizes make 2x up-sampling miss stride 4 by a pixel; align as mmseg does.
            out = out + F.interpolate(head(x), size=out.shape[-2:], mode="bilinear",
                                      align_corners=False)
        return self.classify(self.dropout(out))


class SemanticFPN(nn.Module):
    """Backbone pyramid + :class:`SemanticFPNHead`: ``(B, 3, H, W) -> (B, C, H, W)`` logits."""

    def __init__(self, pyramid: ViTFeaturePyramid, num_classes: int) -> None:
        super().__init__()
        self.pyramid = pyramid
        self.head = SemanticFPNHead(num_classes, in_channels=pyramid.out_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.pyramid(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear",
                             align_corners=False)
