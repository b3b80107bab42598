"""MoCo-v3 (Chen, Xie and He, ICCV 2021) as an image-level objective.

The student is backbone -> projector ``g`` -> predictor; the EMA teacher (MoCo's momentum
encoder) is backbone -> projector. Loss for two views: ``ctr(q1, k2) + ctr(q2, k1)`` with
:func:`~selfpatch.methods.losses.moco_contrastive_loss` (temperature 0.2 for ViTs). With
more views (multi-crop, not in MoCo-v3) every student view ``b`` is scored against each
global teacher view ``a != b`` and the pairs are averaged, times 2 so that two views give
MoCo-v3's sum exactly. MoCo-v3's defaults: projector 3 layers (hidden 4096, out 256, last BN
without affine), predictor 2 layers (hidden 4096), momentum 0.99 -> 1 (cosine), AdamW,
lr 1.5e-4 x batch / 256, weight decay 0.1 (presets/mocov3-*.yaml).
"""

from __future__ import annotations

import torch
from torch import nn

from selfpatch.methods.losses import moco_contrastive_loss
from selfpatch.methods.objective import ImageObjective
from selfpatch.models.heads import ProjectionMLP


class MoCoV3Objective(ImageObjective):
    """MoCo-v3: projector + predictor on the student, symmetric InfoNCE against the teacher."""

    name = "mocov3"

    def __init__(self, dim: int = 256, hidden_dim: int = 4096, pred_hidden_dim: int = 4096,
                 temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.dim, self.hidden_dim, self.pred_hidden_dim = dim, hidden_dim, pred_hidden_dim
        self.temperature = temperature

    def build_head(self, in_dim: int) -> nn.Module:
        """The projector ``(B, in_dim) -> (B, dim)`` (3 layers, last BN without affine)."""
        return ProjectionMLP(in_dim, self.hidden_dim, self.dim, num_layers=3, last_bn=True)

    def build_predictor(self) -> nn.Module:
        """The student's predictor ``(B, dim) -> (B, dim)`` (2 layers)."""
        return ProjectionMLP(self.dim, self.pred_hidden_dim, self.dim, num_layers=2, last_bn=False)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor],
                teacher_temp: float = 0.0) -> torch.Tensor:
        """``student``: V x ``(B, dim)`` predictions; ``teacher``: 2 x ``(B, dim)`` keys."""
        total, pairs = 0.0, 0
        for a, keys in enumerate(teacher):
            for b, queries in enumerate(student):
                if b != a:
                    total = total + moco_contrastive_loss(queries, keys, self.temperature)
                    pairs += 1
        return 2 * total / max(pairs, 1)
