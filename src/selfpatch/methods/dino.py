"""DINO as an image-level objective (:class:`~selfpatch.methods.objective.ImageObjective`)."""

from __future__ import annotations

import torch
from torch import nn

from selfpatch.methods.losses import DINOLoss
from selfpatch.methods.objective import ImageObjective
from selfpatch.models.heads import DINOHead


class DINOObjective(ImageObjective):
    """DINO: heads with ``out_dim`` prototypes, centred/sharpened cross-entropy over view pairs."""

    name = "dino"

    def __init__(self, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 norm_last_layer: bool = True, student_temp: float = 0.1,
                 center_momentum: float = 0.9, head_bn: bool = False,
                 l2_eps: float = 1e-6) -> None:
        super().__init__()
        self.head_args = dict(out_dim=out_dim, hidden_dim=hidden_dim,
                              bottleneck_dim=bottleneck_dim, norm_last_layer=norm_last_layer,
                              use_bn=head_bn, l2_eps=l2_eps)
        self.loss = DINOLoss(out_dim, student_temp, center_momentum)

    def build_head(self, in_dim: int) -> nn.Module:
        """The projection head g: ``(B, in_dim) -> (B, out_dim)``."""
        return DINOHead(in_dim, **self.head_args)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor],
                teacher_temp: float) -> torch.Tensor:
        """Loss over views: ``student`` V x ``(B, K)``, ``teacher`` 2 x ``(B, K)`` (globals)."""
        return self.loss(student, teacher, teacher_temp)

    def teacher_entropy(self, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Normalised entropy (0..1) of the teacher's targets for one view ``(B, K)``."""
        return self.loss.teacher_entropy(teacher, teacher_temp)

    @torch.no_grad()
    def after_step(self, teacher_for_center: list[torch.Tensor]) -> None:
        """Update the centre with this step's teacher outputs."""
        self.loss.update_center(teacher_for_center)

