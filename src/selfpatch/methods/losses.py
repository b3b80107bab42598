"""DINO's distillation loss with a centred, sharpened teacher; used for images and patches.

``D(s, t) = - sum_k softmax((t - c) / tau_t)_k * log_softmax(s / tau_s)_k`` with the centre
``c`` an EMA of the teacher's mean output. The same module serves the image loss (centre over
global views) and the SelfPatch patch loss (its own centre, over all patch outputs).

"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def sharpened_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                            student_temp: float) -> torch.Tensor:
    """Per-row cross-entropy ``(..., K), (..., K) -> (...)`` in float32."""
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs * log_p).sum(dim=-1)


class CenteredDistillationLoss(nn.Module):
    """Cross-entropy to a centred, sharpened teacher, plus the centre's EMA update.

    Args:
        out_dim: K, the number of prototypes (65536 for images, 4096 for patches).
        student_temp: tau_s (0.1).
        center_momentum: EMA momentum of the centre (0.9).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Centred, sharpened teacher distribution ``(..., K)`` (float32, no grad)."""
        return F.softmax((teacher_logits.detach().float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def teacher_entropy(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Mean entropy of the teacher distribution over rows, divided by ``ln K`` (0-dim).

        1 means uniform targets (DINO's uniform collapse: the image task has not started or
        has collapsed), near 0 one-hot targets.
        """
        probs = self.teacher_probs(teacher_logits, teacher_temp)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
        return entropy / math.log(probs.shape[-1])

    @torch.no_grad()
    def update_center(self, teacher_logits: list[torch.Tensor]) -> None:
        """EMA update of the centre from teacher outputs, each ``(..., K)``.

        The batch centre is the mean over every row of every tensor, averaged over all
        processes when a process group is running. Nothing here waits on the host.
        """
        self.apply_center(self.batch_center(teacher_logits))

    @torch.no_grad()
    def batch_center(self, teacher_logits: list[torch.Tensor]) -> torch.Tensor:
        """``(1, K)`` mean of the teacher outputs over all rows (and processes)."""
        rows = sum(t.reshape(-1, t.shape[-1]).shape[0] for t in teacher_logits)
        total = sum(t.reshape(-1, t.shape[-1]).float().sum(dim=0, keepdim=True)
                    for t in teacher_logits)
        count = torch.tensor(float(rows), device=total.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        return total / count

    @torch.no_grad()
    def apply_center(self, batch_center: torch.Tensor) -> None:
        """``center = m * center + (1 - m) * batch_center``."""
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class DINOLoss(CenteredDistillationLoss):
    """Image-level DINO loss over multi-crop view pairs.

    ``forward(student, teacher, teacher_temp)``: ``student`` is a list of V ``(B, K)`` logits
    (the 2 global views first, then the locals); ``teacher`` a list of G ``(B, K)`` logits for
    the global views. Returns the mean over pairs ``(a, b)``, ``a < G``, ``b != a`` of
    ``mean_batch D(student[b], teacher[a])``. Does not update the centre (call
    :meth:`update_center` with the teacher logits after the loss).
    """

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor],
                teacher_temp: float) -> torch.Tensor:
        # One log-softmax per student view, shared by its pairs (not one per pair): half the
        # work and half the (V, B, K) float32 tensors kept for backward with 2 teacher views.
        log_p = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student]
        total, pairs = 0.0, 0
        for a, t in enumerate(teacher):
            probs = self.teacher_probs(t, teacher_temp)
            for b, lp in enumerate(log_p):
                if b == a:
                    continue
                total = total - (probs * lp).sum(dim=-1).mean()
                pairs += 1
        return total / max(pairs, 1)


class PatchDistillationLoss(CenteredDistillationLoss):
    """SelfPatch loss: each patch's student output against its own target, same view.

    ``forward(student, teacher, teacher_temp)``: lists of per-view ``(B, N_v, K)`` logits
    (``N_v`` may differ between views: globals and locals). Returns the mean over views of the
    mean over batch and patches of ``D(student, teacher)`` (paper Eq. 7).
    """

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor],
                teacher_temp: float, release: bool = False) -> torch.Tensor:
        """With ``release=True`` each list entry is set to None once its view's term is
        computed, so that view's ``(B, N_v, K)`` logits (the largest tensors of a SelfPatch
        step) are freed right away instead of living until the caller returns; the caller
        must hold no other reference to them. The autograd graph keeps only the float32
        log-probabilities and teacher probabilities it needs for backward."""
        if len(student) != len(teacher):
            raise ValueError(f"{len(student)} student views but {len(teacher)} teacher views")
        losses = []
        for i in range(len(student)):
            s, t = student[i], teacher[i]
            if release:
                student[i] = teacher[i] = None
            losses.append(sharpened_cross_entropy(s, self.teacher_probs(t, teacher_temp),
                                                  self.student_temp).mean())
            del s, t
        return torch.stack(losses).mean()


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' rows of ``x`` (no gradient) and the offset of this process's rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts), dist.get_rank() * x.shape[0]


def moco_contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo-v3's InfoNCE: ``q`` ``(B, C)`` against the keys ``k`` ``(B, C)`` of all processes.

    Row ``i`` of ``q`` has ``k[i]`` as its positive and every other key in the (global) batch
    as a negative; cosine similarities over ``temperature``; cross-entropy scaled by
    ``2 * temperature`` (MoCo-v3's normalisation). ``k`` gets no gradient.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    keys, offset = gather_rows(k)
    logits = q @ keys.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)


def queue_contrastive_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """MoBY's (and MoCo-v1/v2's) InfoNCE with a queue of negatives.

    ``q`` ``(B, C)`` and ``k`` ``(B, C)`` L2-normalised rows (``k`` gets no gradient),
    ``queue`` ``(C, Q)`` normalised past keys. Row ``i``: positive ``q_i . k_i``, negatives
    ``q_i . queue``; cross-entropy with the positive first, logits over ``temperature``.
    """
    q, k = q.float(), k.detach().float()
    positive = (q * k).sum(dim=1, keepdim=True)
    # A copy: the caller enqueues new keys before backward, which needs this matrix.
    negative = q @ queue.detach().float().clone()
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def patch_contrastive_loss(student: torch.Tensor, teacher: torch.Tensor,
                           negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """SelfPatch's patch loss with negatives (the paper's MoBY variant, Tab. 5).

    ``student`` and ``teacher`` ``(B, N, K)``: patch ``i`` of image ``b``, student output and
    its target; ``negatives`` ``(G, B, K)``: the teacher's outputs for the image-level
    representations ``y`` (Eq. 4) of the G global views of each image. Every vector is
    L2-normalised; patch ``(b, i)`` has its target as the positive and the negatives of every
    *other* image ``j != b`` (G (B - 1) of them); cross-entropy over ``temperature``-scaled
    cosines, mean over patches and images. Targets and negatives get no gradient.
    """
    q = F.normalize(student.float(), dim=-1)
    k = F.normalize(teacher.detach().float(), dim=-1)
    neg = F.normalize(negatives.detach().float(), dim=-1)
    g, b, _ = neg.shape
    positive = (q * k).sum(dim=-1, keepdim=True)  # (B, N, 1)
    negative = torch.einsum("bnk,gjk->bngj", q, neg)  # (B, N, G, B)
    own = torch.eye(b, dtype=torch.bool, device=q.device)[:, None, None, :]  # j == b
    negative = negative.masked_fill(own, float("-inf")).flatten(2)  # (B, N, G*B)
    logits = torch.cat([positive, negative], dim=-1) / temperature
    log_p = F.log_softmax(logits, dim=-1)[..., 0]
    return -log_p.mean()
