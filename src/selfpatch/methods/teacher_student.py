"""DINO (+ SelfPatch) as one module: student, EMA teacher, losses, one ``forward`` per step.

``forward(views)`` computes the total loss ``L = L_SSL + lambda * L_SelfPatch`` for a list of
multi-crop views (2 global first, then locals) and returns it with detached statistics. The
student runs each group of same-size views as one batch (as DINO does); the teacher, in eval
mode and without gradient, encodes the global views (and, for SelfPatch with
``local_crops``, the local views too: the patch targets come from the same view).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from selfpatch.errors import SelfPatchError
from selfpatch.methods.network import SSLNetwork
from selfpatch.methods.selfpatch import N_GLOBAL, SelfPatchObjective


def _group_by_size(views: list[torch.Tensor]) -> list[tuple[int, int]]:
    """Consecutive runs of views with equal spatial size, as ``(start, end)`` index pairs."""
    groups, start = [], 0
    for i in range(1, len(views) + 1):
        if i == len(views) or views[i].shape[-2:] != views[start].shape[-2:]:
            groups.append((start, i))
            start = i
    return groups


class TeacherStudent(nn.Module):
    """Student + EMA teacher + the image-level objective + (optionally) SelfPatch.

    Args:
        backbone: the student backbone ``f`` (``forward_tokens``, ``grid_shape``,
            ``embed_dim``, ``num_heads``; e.g. :class:`~selfpatch.models.backbone.ViTBackbone`);
            the teacher is a copy. SelfPatch backbones usually have no [CLS] token.
        objective: the image-level objective (an
            :class:`~selfpatch.methods.objective.ImageObjective`: DINO, MoCo-v3): builds the
            head ``g`` (and a student-only predictor), computes the image loss, updates its
            state after a step.
        selfpatch: the patch-level objective; ``None`` = the image objective alone (plain DINO).
            When given, the image representation is ``h`` over all patch tokens.
        center_views: ``global`` (DINO: the image centre sees the 2 global views) or ``all``
            (the SelfPatch authors' code: every view).

    ``train.factory.build_teacher_student(cfg)`` builds one from a config.
    """

    def __init__(self, backbone: nn.Module, objective: nn.Module,
                 selfpatch: SelfPatchObjective | None = None,
                 center_views: str = "global") -> None:
        super().__init__()
        if center_views not in ("global", "all"):
            raise SelfPatchError(f"dino.center_views={center_views!r} must be global or all")
        self.objective = objective
        self.selfpatch = selfpatch
        self.center_views = center_views
        dim = backbone.embed_dim
        aggregator = patch_head = None
        if selfpatch is not None:  # creation order (h, g', then g) fixes the initial weights
            aggregator = selfpatch.build_aggregator(dim, backbone.num_heads)
            patch_head = selfpatch.build_patch_head(dim)
        via_h_norm = selfpatch is not None and selfpatch.route_patches_through_h_norm
        from_cls = selfpatch is not None and selfpatch.image_representation == "cls"
        if from_cls and not getattr(backbone, "num_prefix_tokens", 0):
            raise SelfPatchError("selfpatch.image_representation=cls needs a backbone with a "
                                 "[CLS] token (build it with class_token=True)")
        self.student = SSLNetwork(backbone, objective.build_head(dim), aggregator, patch_head,
                                  patch_tokens_via_h_norm=via_h_norm,
                                  predictor=objective.build_predictor(),
                                  image_from_cls=from_cls)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        object.__setattr__(self, "student_runner", None)

    @property
    def use_selfpatch(self) -> bool:
        return self.selfpatch is not None

    def set_student_runner(self, runner: nn.Module | None) -> None:
        """Route the student pass through ``runner`` (e.g. DDP(student)) without registering
        it as a submodule, so state-dict keys stay the same with and without DDP."""
        object.__setattr__(self, "student_runner", runner)

    def train(self, mode: bool = True) -> TeacherStudent:
        """Only the student follows train/eval; the teacher always runs in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    # ------------------------------------------------------------------ forward
    def forward(self, views: list[torch.Tensor], teacher_temp: float,
                diagnostics: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss for one batch of views, each ``(B, 3, S_v, S_v)``; 2 global first.

        Returns ``(loss, stats)``; stats are detached 0-dim tensors (no host sync here).
        """
        if len(views) < N_GLOBAL:
            raise SelfPatchError("need at least the 2 global views")
        sp = self.selfpatch
        patch_on = sp is not None and sp.active
        n_patch_views = sp.n_patch_views(len(views)) if patch_on else 0
        center_all = self.center_views == "all"
        groups = _group_by_size(views)
        stats: dict[str, torch.Tensor] = {}

        # Teacher: image targets for the global views, patch targets for each patch view.
        t_img: list[torch.Tensor] = []
        t_patch: list[torch.Tensor] = []
        global_reps: list[torch.Tensor] = []  # y of the global views (patch negatives)
        with torch.no_grad():
            for start, end in groups:
                if start >= max(N_GLOBAL, n_patch_views) and not center_all:
                    break
                cls, tokens, grid = self.teacher.encode(views, start, end)
                if start < N_GLOBAL or center_all:
                    rep = self.teacher.image_representation(cls, tokens)
                    t_img += list(self.teacher.image_head(rep).chunk(end - start))
                    if start < N_GLOBAL:
                        global_reps += list(rep.chunk(end - start))[: N_GLOBAL - start]
                if start < n_patch_views:
                    n_views = min(end, n_patch_views) - start  # a group may be partly patch views
                    t_patch += sp.teacher_logits(
                        self.teacher, tokens[: n_views * views[start].shape[0]], grid, n_views)
                    if diagnostics:
                        stats.setdefault("valid_neighbour_share", sp.targets.last_valid_share)
                del tokens, cls
            if patch_on:
                # Centre statistics and diagnostics now, so that the loss below can free each
                # view's (B, N_v, K) teacher logits as soon as it has used them.
                patch_center = sp.batch_center(t_patch)
                if diagnostics:
                    stats["teacher_patch_entropy"] = sp.patch_loss.teacher_entropy(
                        t_patch[0], sp.patch_teacher_temp(teacher_temp))
            if diagnostics and hasattr(self.objective, "teacher_entropy"):
                stats["teacher_entropy"] = self.objective.teacher_entropy(t_img[0], teacher_temp)

        # Student: image logits for every view, patch logits for each patch view. Runs
        # through `student_runner` (the DDP wrapper in distributed runs).
        runner = self.student_runner or self.student
        s_img, s_patch, first_tokens = runner(views, groups, n_patch_views)
        if diagnostics:
            stats["patch_token_rank"] = effective_rank(first_tokens)

        image_loss = self.objective(s_img, t_img[:N_GLOBAL], teacher_temp)
        loss = image_loss
        stats["image_loss"] = image_loss.detach()
        if patch_on:
            with torch.no_grad():
                negatives = sp.negative_logits(self.teacher, global_reps)
            # frees both lists view by view
            patch_loss = sp(s_patch, t_patch, teacher_temp, negatives=negatives)
            loss = image_loss + sp.loss_weight * patch_loss
            stats["patch_loss"] = patch_loss.detach()
        stats["loss"] = loss.detach()

        # Centres move after the loss used them (DINO's order).
        self.objective.after_step(t_img if center_all else t_img[:N_GLOBAL])
        if patch_on:
            sp.after_step(patch_center)
        return loss, stats

    # ------------------------------------------------------------------ EMA
    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = m * teacher + (1 - m) * student`` over all parameters."""
        t = [p for p in self.teacher.parameters()]
        s = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1.0 - momentum)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters of the heads' last layers (frozen during the first epoch(s))."""
        heads = [self.student.image_head] + ([self.student.patch_head]
                                             if self.student.patch_head is not None else [])
        return [p for h in heads for n, p in h.named_parameters() if n.startswith("last_layer")]


@torch.no_grad()
def effective_rank(tokens: torch.Tensor, max_rows: int = 2048) -> torch.Tensor:
    """exp(entropy) of the normalised singular values of ``(B, N, D)`` tokens (centred).

    1 means all tokens collapsed onto one direction; up to ``D`` for well-spread tokens; NaN
    when the tokens are not finite. Syncs with the host (only called on logging steps).
    """
    x = tokens.reshape(-1, tokens.shape[-1]).float()[:max_rows]
    if not bool(torch.isfinite(x).all()):  # a diagnostic must never stop the run (SVD would)
        return torch.full((), float("nan"), device=x.device)
    x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
