"""The SelfPatch objective in one place (paper Sec. 3, Eq. 4-7).

For every patch ``i`` of a view, the teacher finds its ``k`` most similar neighbours among the
adjacent patches (:mod:`~selfpatch.methods.neighbours`, :mod:`~selfpatch.methods.matching`),
summarises them with the aggregation module ``h`` into a target ``y_i`` (Eq. 5), and the student's
own patch token ``x_i`` is distilled towards it through the patch head ``g'`` (Eq. 6-7):

    L_SelfPatch = mean over views, images, patches of D(g'_s(x_i), g'_t(h_t(top-k(i))))

with ``D`` DINO's centred, sharpened cross-entropy (:class:`PatchDistillationLoss`, its own
centre). The total loss is ``L_image + loss_weight * L_SelfPatch`` (Eq. 8); the image-level
representation itself is ``h`` over all patch tokens (Eq. 4), built by :class:`SSLNetwork`.

Two pieces, usable on their own in any training loop:

- :class:`SelfPatchTargets` (no parameters): tokens -> aggregated positives::

      targets = SelfPatchTargets(neighbourhood="3x3", border="valid", k=4)
      with torch.no_grad():
          y = targets(teacher_tokens, grid, teacher_aggregator)   # (B, N, D)
      loss = patch_loss([student_patch_head(student_tokens)], [teacher_patch_head(y)], 0.04)

- :class:`SelfPatchObjective`: the targets, the patch loss with its centre, the weight and which
  views take part, plus builders for ``h`` and ``g'`` (what :class:`TeacherStudent` uses).
"""

from __future__ import annotations

import torch
from torch import nn

from selfpatch.errors import SelfPatchError
from selfpatch.methods.losses import PatchDistillationLoss, patch_contrastive_loss
from selfpatch.methods.matching import gather_positives, match_positives
from selfpatch.methods.neighbours import (
    BORDER_MODES,
    NEIGHBOURHOODS,
    neighbour_table,
    window_candidates,
)
from selfpatch.models.aggregation import build_aggregator
from selfpatch.models.heads import DINOHead

N_GLOBAL = 2  # the first two views of a multi-crop list are the global crops


class SelfPatchTargets(nn.Module):
    """Neighbour matching + aggregation of the positives; holds no parameters.

    ``forward(tokens (B, N, D), grid (h, w), aggregator) -> (B, N, D)``: for patch i, the
    aggregator's summary of its k most similar neighbours (masked slots excluded). The
    ``aggregator`` (a module ``(S, L, D), (S, L) -> (S, D)``) is passed in so the same targets
    serve the teacher's module (the method) or any other.

    After a call, :attr:`last_valid_share` holds the share of real slots among the ``B*N*k``
    positives (a tensor, no host sync), useful to spot border effects.
    """

    def __init__(self, neighbourhood: str = "3x3", border: str = "valid", k: int = 4) -> None:
        super().__init__()
        if neighbourhood not in NEIGHBOURHOODS:
            raise SelfPatchError(
                f"selfpatch.neighbourhood={neighbourhood!r} is not one of {NEIGHBOURHOODS}")
        if border not in BORDER_MODES:
            raise SelfPatchError(f"selfpatch.border={border!r} is not one of {BORDER_MODES}")
        if k < 1:
            raise SelfPatchError(f"selfpatch.k={k} must be at least 1")
        window = window_candidates(neighbourhood)
        if window is not None and k > window:  # a slot that could never be filled: a typo
            raise SelfPatchError(
                f"selfpatch.k={k} is larger than the {neighbourhood} neighbourhood ({window} "
                "candidates); lower selfpatch.k or use a larger selfpatch.neighbourhood")
        self.neighbourhood, self.border, self.k = neighbourhood, border, k
        self.last_valid_share: torch.Tensor | None = None

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int],
                aggregator: nn.Module) -> torch.Tensor:
        b, n, d = tokens.shape
        table = neighbour_table(grid[0], grid[1], self.neighbourhood, self.border, tokens.device)
        positives, valid = match_positives(tokens, table, self.k)  # (B, N, k) each
        gathered = gather_positives(tokens, positives)  # (B, N, k, D)
        self.last_valid_share = valid.float().mean()
        out = aggregator(gathered.reshape(b * n, self.k, d), valid.reshape(b * n, self.k))
        return out.reshape(b, n, d)


class SelfPatchObjective(nn.Module):
    """Patch-level objective: targets, loss, centre, weight and the views it covers.

    Args:
        neighbourhood, border, k: the positives (see :class:`SelfPatchTargets`).
        aggregation, aggregation_depth: ``h`` (``attention`` = CaiT class-attention blocks,
            ``mean`` = the no-attention ablation).
        out_dim, hidden_dim, bottleneck_dim, norm_last_layer, head_bn, l2_eps: the patch head
            ``g'`` (a :class:`DINOHead`, ``(..., D) -> (..., out_dim)``).
        student_temp, center_momentum: of the patch loss (its centre is separate from the
            image loss's).
        teacher_temp: the patch targets' teacher temperature; 0 (default) uses the one the
            caller passes each step (the image objective's schedule, as in the paper).
        loss_weight: lambda in ``L_image + lambda * L_SelfPatch``; 0 turns the patch loss off
            (``h`` still forms the image representation).
        local_crops: whether local crops get a patch loss too (the authors' code: yes).
        route_patches_through_h_norm: the student's patch tokens reach ``g'`` through ``h``'s
            final LayerNorm, as in the authors' code, whose backbone has no final norm.
        negatives, negative_temperature: replace the patch distillation by
            :func:`~selfpatch.methods.losses.patch_contrastive_loss` with the teacher's ``g'``
            of the image-level representations of the other images as negatives (the paper's
            MoBY variant; this project's reading of its one-sentence description).
        image_representation: what the image-level loss sees: ``aggregation`` (the paper:
            ``h`` over all patch tokens) or ``cls`` (the backbone's [CLS] token, which it must
            have; ``h`` then serves only the patch targets — a deviation from the paper). ``cls``
            needs ``aggregation="mean"``: the patch targets carry no gradient, so only the image
            loss trains an attention ``h``, which would otherwise stay at its initialisation.
    """

    def __init__(self, *, neighbourhood: str = "3x3", border: str = "valid", k: int = 4,
                 aggregation: str = "attention", aggregation_depth: int = 2,
                 out_dim: int = 4096, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 norm_last_layer: bool = True, student_temp: float = 0.1,
                 teacher_temp: float = 0.0, center_momentum: float = 0.9, loss_weight: float = 0.1,
                 local_crops: bool = True, head_bn: bool = False, l2_eps: float = 1e-6,
                 route_patches_through_h_norm: bool = False, negatives: bool = False,
                 negative_temperature: float = 0.2,
                 image_representation: str = "aggregation") -> None:
        super().__init__()
        if loss_weight < 0:
            raise SelfPatchError(f"selfpatch.loss_weight={loss_weight} must be >= 0")
        if aggregation not in ("attention", "mean"):
            raise SelfPatchError(
                f"selfpatch.aggregation={aggregation!r} is not one of ('attention', 'mean')")
        if teacher_temp < 0:
            raise SelfPatchError(f"selfpatch.teacher_temp={teacher_temp} must be >= 0 "
                                 "(0 = the image objective's temperature)")
        self.teacher_temp = teacher_temp
        self.targets = SelfPatchTargets(neighbourhood, border, k)
        self.patch_loss = PatchDistillationLoss(out_dim, student_temp, center_momentum)
        self.loss_weight, self.local_crops = loss_weight, local_crops
        self.aggregation, self.aggregation_depth = aggregation, aggregation_depth
        self.head_args = dict(out_dim=out_dim, hidden_dim=hidden_dim,
                              bottleneck_dim=bottleneck_dim, norm_last_layer=norm_last_layer,
                              use_bn=head_bn, l2_eps=l2_eps)
        self.route_patches_through_h_norm = route_patches_through_h_norm
        if negative_temperature <= 0:
            raise SelfPatchError(f"selfpatch.negative_temperature={negative_temperature} must "
                                 "be > 0")
        self.negatives, self.negative_temperature = negatives, negative_temperature
        if image_representation not in ("aggregation", "cls"):
            raise SelfPatchError(f"selfpatch.image_representation={image_representation!r} is "
                                 "not one of ('aggregation', 'cls')")
        if image_representation == "cls" and aggregation != "mean":
            raise SelfPatchError("selfpatch.image_representation=cls needs "
                                 "selfpatch.aggregation=mean (nothing would train an attention h)")
        self.image_representation = image_representation

    def build_aggregator(self, dim: int, num_heads: int) -> nn.Module:
        """``h``: ``(S, L, D), (S, L) mask -> (S, D)``."""
        return build_aggregator(self.aggregation, dim, num_heads, self.aggregation_depth)

    def build_patch_head(self, dim: int) -> nn.Module:
        """``g'``: ``(..., dim) -> (..., out_dim)``."""
        return DINOHead(dim, **self.head_args)

    @property
    def active(self) -> bool:
        """Whether the patch loss is computed at all (``loss_weight > 0``)."""
        return self.loss_weight > 0

    def patch_teacher_temp(self, image_teacher_temp: float) -> float:
        """The patch targets' temperature for a step whose image temperature is given."""
        return self.teacher_temp if self.teacher_temp > 0 else image_teacher_temp

    def n_patch_views(self, n_views: int) -> int:
        """How many of the first views get a patch loss: all, or only the 2 global ones."""
        return n_views if self.local_crops else min(n_views, N_GLOBAL)

    def check_grids(self, grids: list[tuple[int, int]]) -> None:
        """Raise a clear error if any patch grid is too small (before training). Grids with
        fewer than ``k`` real candidates for a patch are fine: the surplus slots are masked,
        as at borders (e.g. a 2x2 local crop has 3 candidates per patch in any neighbourhood)."""
        for h, w in grids:
            if h < 2 or w < 2:
                raise SelfPatchError(f"a {h}x{w} patch grid is too small: SelfPatch needs at "
                                     "least 2x2 patches (larger crops or smaller patches)")

    @torch.no_grad()
    def teacher_logits(self, teacher: nn.Module, tokens: torch.Tensor, grid: tuple[int, int],
                       n_views: int) -> list[torch.Tensor]:
        """Targets for ``n_views`` views encoded together: ``tokens (n_views*B, N, D)`` of the
        teacher -> ``n_views`` x ``(B, N, K')`` teacher patch logits ``g'_t(h_t(top-k))``."""
        y = self.targets(tokens, grid, teacher.aggregator)  # (n_views*B, N, D)
        return list(teacher.patch_head(y).chunk(n_views))

    @torch.no_grad()
    def batch_center(self, teacher_logits: list[torch.Tensor]) -> torch.Tensor:
        """``(1, K')`` mean teacher output of this step (applied by :meth:`after_step`)."""
        return self.patch_loss.batch_center(teacher_logits)

    @torch.no_grad()
    def negative_logits(self, teacher: nn.Module, image_reps: list[torch.Tensor]
                        ) -> torch.Tensor | None:
        """``(G, B, K')`` teacher ``g'`` outputs of the G global views' image representations
        ``y`` (each ``(B, D)``), the negatives of :func:`patch_contrastive_loss`; ``None``
        without negatives."""
        if not self.negatives:
            return None
        return torch.stack([teacher.patch_head(y) for y in image_reps])

    def forward(self, student_logits: list[torch.Tensor], teacher_logits: list[torch.Tensor],
                teacher_temp: float, negatives: torch.Tensor | None = None) -> torch.Tensor:
        """``L_SelfPatch`` over per-view ``(B, N_v, K')`` logits (same view on both sides);
        with ``negatives`` (``(G, B, K')``) the contrastive variant, mean over views.
        ``teacher_temp`` is the image objective's; :meth:`patch_teacher_temp` picks the one used.

        Releases the list entries as it goes (each view's logits are the largest tensors of
        the step): the caller must not hold other references to them.
        """
        if negatives is None:
            return self.patch_loss(student_logits, teacher_logits,
                                   self.patch_teacher_temp(teacher_temp), release=True)
        losses = []
        for i in range(len(student_logits)):
            s, t = student_logits[i], teacher_logits[i]
            student_logits[i] = teacher_logits[i] = None
            losses.append(patch_contrastive_loss(s, t, negatives, self.negative_temperature))
            del s, t
        return torch.stack(losses).mean()

    @torch.no_grad()
    def after_step(self, batch_center: torch.Tensor) -> None:
        """Move the patch centre (after the loss has used it, as DINO does)."""
        self.patch_loss.apply_center(batch_center)
