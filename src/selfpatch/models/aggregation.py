"""Aggregation module h: summarise a set of patch tokens into one vector.

The attention variant follows CaiT's class-attention (Touvron et al., 2021): a learnable [CLS]
query attends over ``[CLS; inputs]`` and only the [CLS] slot is updated. It is written here
rather than taken from ``timm.models.cait`` because timm's ``ClassAttn`` has no key mask, and
SelfPatch needs masked slots (border patches with fewer than k neighbours) to get zero weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from selfpatch.errors import SelfPatchError


class ClassAttention(nn.Module):
    """Multi-head attention with a single query (the [CLS] slot) and an optional key mask."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise SelfPatchError(f"aggregation width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(S, 1 + L, D)`` with the [CLS] slot first; ``key_mask``: ``(S, 1 + L)`` bool,
        True = may be attended. Returns the updated [CLS] ``(S, 1, D)``."""
        s, t, d = x.shape
        h = self.num_heads
        q = self.q(x[:, :1]).reshape(s, 1, h, d // h).transpose(1, 2)  # (S, H, 1, d)
        k, v = self.kv(x).reshape(s, t, 2, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (S, 1, 1, T)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (S, H, 1, d)
        return self.proj(out.transpose(1, 2).reshape(s, 1, d))


class ClassAttentionBlock(nn.Module):
    """Pre-norm class-attention block: ``cls += attn(norm([cls; x])); cls += mlp(norm(cls))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, cls: torch.Tensor, x: torch.Tensor,
                key_mask: torch.Tensor | None) -> torch.Tensor:
        """``cls`` ``(S, 1, D)``, ``x`` ``(S, L, D)`` -> new ``cls`` ``(S, 1, D)``."""
        u = self.norm1(torch.cat([cls, x], dim=1))
        cls = cls + self.drop_path(self.attn(u, key_mask))
        return cls + self.drop_path(self.mlp(self.norm2(cls)))


class ClassAttentionAggregator(nn.Module):
    """h: own [CLS] query, ``depth`` class-attention blocks, final LayerNorm.

    ``forward(tokens (S, L, D), mask (S, L) bool or None) -> (S, D)``. Slots with
    ``mask == False`` receive exactly zero attention weight, so their content cannot change
    the output. Image level: ``S = B`` and ``L = N``; patch level: ``S = B * N``, ``L = k``.
    """

    def __init__(self, dim: int, num_heads: int, depth: int = 2, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(
            ClassAttentionBlock(dim, num_heads, mlp_ratio, drop_path) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(_init_weights)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        s = tokens.shape[0]
        key_mask = None
        if mask is not None:
            # The [CLS] slot is always visible, so no row is fully masked (no NaN softmax).
            key_mask = torch.cat([mask.new_ones(s, 1), mask.bool()], dim=1)
        cls = self.cls_token.expand(s, -1, -1)
        for blk in self.blocks:
            cls = blk(cls, tokens, key_mask)
        return self.norm(cls[:, 0])


class MeanAggregator(nn.Module):
    """Ablation (paper Tab. 4d): masked average of the tokens, ``(S, L, D) -> (S, D)``."""

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return tokens.mean(dim=1)
        w = mask.to(tokens.dtype).unsqueeze(-1)
        return (tokens * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_aggregator(kind: str, dim: int, num_heads: int, depth: int = 2,
                     drop_path: float = 0.0) -> nn.Module:
    """``attention`` (CaiT class-attention, default) or ``mean`` (average pooling ablation)."""
    if kind == "attention":
        return ClassAttentionAggregator(dim, num_heads, depth, drop_path=drop_path)
    if kind == "mean":
        return MeanAggregator()
    raise SelfPatchError(f"selfpatch.aggregation={kind!r} is not one of ('attention', 'mean')")
