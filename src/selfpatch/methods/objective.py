"""The interface every image-level objective implements (DINO, MoCo-v3, ...).

SelfPatch only needs the backbone's patch tokens, so an image-level objective is independent
of it: :class:`~selfpatch.methods.teacher_student.TeacherStudent` asks the objective for the
student's head ``g`` (copied into the EMA teacher) and, optionally, a predictor that only the
student applies after ``g``; every step it passes the student's outputs for all views and the
teacher's outputs for the 2 global views to :meth:`ImageObjective.forward`, then calls
:meth:`ImageObjective.after_step` (centres, queues). To add an objective: subclass this, and
add a builder for it in ``train/factory.py`` (the only place that reads its config section).
"""

from __future__ import annotations

import torch
from torch import nn


class ImageObjective(nn.Module):
    """Base class: an image-level self-supervised objective between student and EMA teacher."""

    name = "image"

    def build_head(self, in_dim: int) -> nn.Module:
        """``g``: ``(B, in_dim) -> (B, K)``; the teacher gets an EMA copy."""
        raise NotImplementedError

    def build_predictor(self) -> nn.Module | None:
        """An extra module the student applies after ``g`` (MoCo-v3, BYOL); ``None``: none."""
        return None

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor],
                teacher_temp: float) -> torch.Tensor:
        """Loss from ``student`` (V x ``(B, K)``, globals first) and ``teacher`` (2 x
        ``(B, K)``, the global views). ``teacher_temp`` is DINO's; others may ignore it."""
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, teacher: list[torch.Tensor]) -> None:
        """Update state from this step's teacher outputs (nothing by default)."""
