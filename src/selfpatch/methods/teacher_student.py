"""DINO (+ SelfPatch) as one module: student, EMA teacher, losses, one ``forward`` per step.

``forward(views)`` computes the total loss ``L = L_SSL + lambda * L_SelfPatch`` for a list of
multi-crop views (2 global first, then locals) and returns it with detached statistics. The
student runs each group of same-size views as one batch (as DINO does); the teacher, in eval
mode and without gradient, encodes the global views (and, for SelfPatch with
``local_crops``, the local views too: the patch targets come from the same view).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from selfpatch.config import Config
from selfpatch.errors import SelfPatchError
from selfpatch.methods.dino import IMAGE_OBJECTIVES
from selfpatch.methods.losses import PatchDistillationLoss
from selfpatch.methods.network import SSLNetwork
from selfpatch.methods.selfpatch import SelfPatchTargets
from selfpatch.models.aggregation import build_aggregator
from selfpatch.models.backbone import ViTBackbone, make_backbone_spec
from selfpatch.models.heads import DINOHead

N_GLOBAL = 2


def build_backbone(cfg: Config) -> ViTBackbone:
    """The student backbone named by ``cfg.model`` (DINO keeps a [CLS] token, SelfPatch not)."""
    spec = make_backbone_spec(cfg.model.arch, cfg.model.patch_size, cfg.data.global_size,
                              class_token=not cfg.uses_selfpatch)
    return ViTBackbone(spec, drop_path_rate=cfg.model.drop_path)


def _group_by_size(views: list[torch.Tensor]) -> list[tuple[int, int]]:
    """Consecutive runs of views with equal spatial size, as ``(start, end)`` index pairs."""
    groups, start = [], 0
    for i in range(1, len(views) + 1):
        if i == len(views) or views[i].shape[-2:] != views[start].shape[-2:]:
            groups.append((start, i))
            start = i
    return groups


class TeacherStudent(nn.Module):
    """Student + EMA teacher + the image-level objective + (optionally) SelfPatch."""

    def __init__(self, cfg: Config, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.use_selfpatch = cfg.uses_selfpatch
        if cfg.image_objective not in IMAGE_OBJECTIVES:
            raise SelfPatchError(f"method={cfg.method!r}: unknown image objective")
        d = cfg.dino
        self.objective = IMAGE_OBJECTIVES[cfg.image_objective](
            out_dim=d.out_dim, hidden_dim=d.hidden_dim, bottleneck_dim=d.bottleneck_dim,
            norm_last_layer=d.norm_last_layer, student_temp=d.student_temp,
            center_momentum=d.center_momentum)
        backbone = backbone if backbone is not None else build_backbone(cfg)
        dim = backbone.embed_dim
        aggregator = patch_head = None
        if self.use_selfpatch:
            sp = cfg.selfpatch
            aggregator = build_aggregator(sp.aggregation, dim, backbone.num_heads,
                                          sp.aggregation_depth)
            patch_head = DINOHead(dim, sp.out_dim, d.hidden_dim, d.bottleneck_dim,
                                  norm_last_layer=d.norm_last_layer)
            self.targets = SelfPatchTargets(sp.neighbourhood, sp.border, sp.k)
            self.patch_loss = PatchDistillationLoss(sp.out_dim, d.student_temp,
                                                    sp.center_momentum)
        self.student = SSLNetwork(backbone, self.objective.build_head(dim), aggregator,
                                  patch_head)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        object.__setattr__(self, "student_runner", None)

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
    def _encode(self, net: SSLNetwork, views: list[torch.Tensor], start: int, end: int
                ) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
        x = torch.cat(views[start:end]) if end - start > 1 else views[start]
        cls, tokens = net.backbone.forward_tokens(x)
        return cls, tokens, net.backbone.grid_shape(x.shape[-2], x.shape[-1])

    def forward(self, views: list[torch.Tensor], teacher_temp: float,
                diagnostics: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss for one batch of views, each ``(B, 3, S_v, S_v)``; 2 global first.

        Returns ``(loss, stats)``; stats are detached 0-dim tensors (no host sync here).
        """
        if len(views) < N_GLOBAL:
            raise SelfPatchError("need at least the 2 global views")
        lam = self.cfg.selfpatch.loss_weight if self.use_selfpatch else 0.0
        patch_on = self.use_selfpatch and lam > 0
        n_patch_views = len(views) if self.cfg.selfpatch.local_crops else N_GLOBAL
        groups = _group_by_size(views)
        stats: dict[str, torch.Tensor] = {}

        # Teacher: image targets for the global views, patch targets for each patch view.
        need_all_teacher = patch_on and n_patch_views > N_GLOBAL or (
            self.cfg.dino.center_views == "all")
        t_img: list[torch.Tensor] = []
        t_patch: list[torch.Tensor] = []
        with torch.no_grad():
            for start, end in groups:
                if start >= N_GLOBAL and not need_all_teacher:
                    break
                cls, tokens, grid = self._encode(self.teacher, views, start, end)
                if start < N_GLOBAL or self.cfg.dino.center_views == "all":
                    rep = self.teacher.image_representation(cls, tokens)
                    t_img += list(self.teacher.image_head(rep).chunk(end - start))
                if patch_on and start < n_patch_views:
                    n_views = min(end, n_patch_views) - start  # a group may be partly patch views
                    y = self.targets(tokens[: n_views * views[start].shape[0]], grid,
                                     self.teacher.aggregator)  # (gB, N, D)
                    t_patch += list(self.teacher.patch_head(y).chunk(n_views))
                    if diagnostics:
                        stats.setdefault("valid_neighbour_share", self.targets.last_valid_share)
                del tokens, cls
            if patch_on:
                # Centre statistics and diagnostics now, so that the loss below can free each
                # view's (B, N_v, K) teacher logits as soon as it has used them.
                patch_center = self.patch_loss.batch_center(t_patch)
                if diagnostics:
                    probs = self.patch_loss.teacher_probs(t_patch[0], teacher_temp)
                    stats["teacher_patch_entropy"] = -(
                        probs * probs.clamp_min(1e-12).log()).sum(-1).mean() / math.log(
                        probs.shape[-1])
                    del probs

        # Student: image logits for every view, patch logits for each patch view. Runs
        # through `student_runner` (the DDP wrapper in distributed runs).
        runner = self.student_runner or self.student
        s_img, s_patch, first_tokens = runner(views, groups, n_patch_views if patch_on else 0)
        if diagnostics:
            stats["patch_token_rank"] = effective_rank(first_tokens)

        image_loss = self.objective(s_img, t_img[:N_GLOBAL], teacher_temp)
        loss = image_loss
        stats["image_loss"] = image_loss.detach()
        if patch_on:
            # release: the loss drops both lists' logits view by view (memory, see losses.py)
            patch_loss = self.patch_loss(s_patch, t_patch, teacher_temp, release=True)
            loss = image_loss + lam * patch_loss
            stats["patch_loss"] = patch_loss.detach()
        stats["loss"] = loss.detach()

        # Centres move after the loss used them (DINO's order).
        self.objective.after_step(t_img if self.cfg.dino.center_views == "all"
                                  else t_img[:N_GLOBAL])
        if patch_on:
            self.patch_loss.apply_center(patch_center)
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

    1 means all tokens collapsed onto one direction; up to ``D`` for well-spread tokens.
    """
    x = tokens.reshape(-1, tokens.shape[-1]).float()[:max_rows]
    x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
