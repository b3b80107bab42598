"""DINO + SelfPatch from the library's pieces, in a hand-written training loop (random data).

Run: ``python examples/custom_loop.py`` (CPU, a few seconds). Sizes are tiny; the paper's are
in the comments. Shapes: B images, N patches per view, D width, K/K' prototypes, k positives.
"""

import copy

import torch
from torch import nn

from selfpatch.methods import (
    DINOLoss,
    PatchDistillationLoss,
    SelfPatchTargets,
    gather_positives,
    match_positives,
    neighbour_table,
)
from selfpatch.models import ClassAttentionAggregator, DINOHead, ViTBackbone, make_backbone_spec
from selfpatch.train.optim import clip_gradients_per_parameter


class Network(nn.Module):
    """One side of the pair: backbone f, aggregation module h, heads g and g'."""

    def __init__(self) -> None:
        super().__init__()
        # ViT-Ti/8 without a [CLS] token; 32 px crops -> 4x4 grid (paper: ViT-S/16, 224 px).
        self.f = ViTBackbone(make_backbone_spec("vit_tiny", patch_size=8, img_size=32),
                             drop_path_rate=0.1)
        d = self.f.embed_dim
        self.h = ClassAttentionAggregator(d, self.f.num_heads, depth=2)
        self.g = DINOHead(d, out_dim=1024)  # image head (paper: 65536)
        self.g_patch = DINOHead(d, out_dim=256)  # patch head g' (paper: 4096)


def main(steps: int = 2, batch: int = 4, lam: float = 0.1, teacher_temp: float = 0.04) -> float:
    torch.manual_seed(0)
    student = Network()
    teacher = copy.deepcopy(student).eval().requires_grad_(False)  # theta_bar, EMA of theta
    targets = SelfPatchTargets(neighbourhood="3x3", border="valid", k=4)
    image_loss, patch_loss = DINOLoss(1024), PatchDistillationLoss(256)  # own centres
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4 * batch / 256, weight_decay=0.04)

    for step in range(steps):
        # 2 global views (32 px, 4x4 grid) then 2 local views (16 px, 2x2 grid).
        views = [torch.randn(batch, 3, s, s) for s in (32, 32, 16, 16)]

        with torch.no_grad():  # teacher: image targets (globals), patch targets (every view)
            t_img, t_patch = [], []
            for i, v in enumerate(views):
                tokens = teacher.f(v)  # (B, N, D), after the final norm
                if i < 2:
                    t_img.append(teacher.g(teacher.h(tokens)))  # (B, K)
                y = targets(tokens, teacher.f.grid_shape(*v.shape[-2:]), teacher.h)  # (B, N, D)
                t_patch.append(teacher.g_patch(y))  # (B, N, K')

        with torch.no_grad():  # the same patch targets, one piece at a time (first view)
            tokens = teacher.f(views[0])
            b, n, d = tokens.shape
            table = neighbour_table(4, 4, "3x3", "valid")  # index, valid: (N, 8)
            positives, valid = match_positives(tokens, table, k=4)  # (B, N, k) each
            gathered = gather_positives(tokens, positives)  # (B, N, k, D)
            y0 = teacher.h(gathered.reshape(b * n, 4, d), valid.reshape(b * n, 4))  # (B*N, D)
            assert torch.allclose(y0.view(b, n, d), targets(tokens, (4, 4), teacher.h), atol=1e-5)

        s_img, s_patch = [], []  # student: every view
        for v in views:
            tokens = student.f(v)
            s_img.append(student.g(student.h(tokens)))  # g(h(all patches)): (B, K)
            s_patch.append(student.g_patch(tokens))  # g'(f(i)), no aggregation: (B, N, K')

        loss_img = image_loss(s_img, t_img, teacher_temp)  # pairs (global a, view b != a)
        loss_patch = patch_loss(s_patch, t_patch, teacher_temp)  # same view, patch by patch
        loss = loss_img + lam * loss_patch
        optimizer.zero_grad()
        loss.backward()
        clip_gradients_per_parameter(list(student.parameters()), 3.0)
        optimizer.step()
        image_loss.update_center(t_img)  # centres move after the loss used them
        patch_loss.update_center(t_patch)
        with torch.no_grad():  # EMA over all parameters: f, h, g, g'
            for p_t, p_s in zip(teacher.parameters(), student.parameters()):
                p_t.mul_(0.996).add_(p_s.detach(), alpha=0.004)
        print(f"step {step}: loss {loss.item():.4f} (image {loss_img.item():.4f}, "
              f"patch {loss_patch.item():.4f})")
    return loss.item()


if __name__ == "__main__":
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a busy CPU
    main()
