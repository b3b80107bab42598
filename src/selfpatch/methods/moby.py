"""MoBY (Xie et al., 2021: "Self-Supervised Learning with Swin Transformers") as an image-level
objective: MoCo-v2's queues of negatives with BYOL's predictor and momentum schedule.

The student is backbone -> projector ``g`` -> predictor; the EMA teacher is backbone ->
projector. Keys and predictions are L2-normalised. Two views: ``ctr(q1, k2, queue2) + ctr(q2,
k1, queue1)`` (:func:`~selfpatch.methods.losses.queue_contrastive_loss`), where ``queue_v``
holds the teacher's keys of view ``v`` from earlier steps (all processes' keys are enqueued
after each step). With more views every student view ``b`` meets each global teacher view
``a != b`` with ``queue_a``; the pairs are averaged, times 2 (two views: MoBY's sum exactly).
MoBY's defaults: projector and predictor 2 layers (Linear with bias, BN, ReLU, Linear; hidden
4096, out 256), 4096 negatives per queue, temperature 0.2, momentum 0.99 -> 1 (cosine).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfpatch.methods.losses import gather_rows, queue_contrastive_loss
from selfpatch.methods.objective import ImageObjective
from selfpatch.models.heads import ProjectionMLP

N_QUEUES = 2  # one per global view, as MoBY


class MoBYObjective(ImageObjective):
    """MoBY: projector + predictor on the student, InfoNCE against the teacher and a queue."""

    name = "moby"

    def __init__(self, dim: int = 256, hidden_dim: int = 4096, queue_size: int = 4096,
                 temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size} must be >= 1")
        self.dim, self.hidden_dim, self.temperature = dim, hidden_dim, temperature
        # Random unit columns to start with, as MoBY; buffers, so checkpoints carry them.
        self.register_buffer("queues", F.normalize(torch.randn(N_QUEUES, dim, queue_size), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def build_head(self, in_dim: int) -> nn.Module:
        """The projector ``(B, in_dim) -> (B, dim)``."""
        return ProjectionMLP(in_dim, self.hidden_dim, self.dim, num_layers=2, bias=True)

    def build_predictor(self) -> nn.Module:
        """The student's predictor ``(B, dim) -> (B, dim)``."""
        return ProjectionMLP(self.dim, self.hidden_dim, self.dim, num_layers=2, bias=True)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor],
                teacher_temp: float = 0.0) -> torch.Tensor:
        """``student``: V x ``(B, dim)`` predictions; ``teacher``: 2 x ``(B, dim)`` keys."""
        queries = [F.normalize(s.float(), dim=1) for s in student]
        total, pairs = 0.0, 0
        for a, keys in enumerate(teacher[:N_QUEUES]):
            keys = F.normalize(keys.detach().float(), dim=1)
            for b, q in enumerate(queries):
                if b != a:
                    total = total + queue_contrastive_loss(q, keys, self.queues[a],
                                                           self.temperature)
                    pairs += 1
        return 2 * total / max(pairs, 1)

    @torch.no_grad()
    def after_step(self, teacher: list[torch.Tensor]) -> None:
        """Enqueue this step's keys of the 2 global views (all processes'), oldest out."""
        size = self.queues.shape[-1]
        ptr = int(self.queue_ptr)
        for a, keys in enumerate(teacher[:N_QUEUES]):
            keys, _ = gather_rows(F.normalize(keys.float(), dim=1))
            keys = keys[-size:]  # a batch larger than the queue keeps its last rows
            index = (ptr + torch.arange(keys.shape[0], device=keys.device)) % size
            self.queues[a][:, index] = keys.T.to(self.queues.dtype)
        self.queue_ptr.fill_((ptr + keys.shape[0]) % size)
