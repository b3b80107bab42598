"""The trainable network: backbone f, aggregation module h, image head g, patch head g'."""

from __future__ import annotations

import torch
from torch import nn


class SSLNetwork(nn.Module):
    """One side (student or teacher) of the self-distillation pair.

    Args:
        backbone: module with ``forward_tokens(images) -> (cls | None, (B, N, D))`` and
            ``grid_shape(H, W)``, ``embed_dim``, ``num_heads`` (e.g. :class:`ViTBackbone`).
        image_head: g, ``(B, D) -> (B, K)``.
        aggregator: h, ``(S, L, D), (S, L) -> (S, D)``; when given, the image representation is
            ``h(all patch tokens)`` (SelfPatch); when ``None`` it is the backbone's [CLS] token
            (plain DINO).
        image_from_cls: use the backbone's [CLS] token as the image representation even with
            an ``aggregator`` (which then serves only the patch targets; a deviation from the
            paper, ``selfpatch.image_representation=cls``).
        patch_head: g', ``(..., D) -> (..., K')``, only for SelfPatch.
        predictor: applied after g by the student's forward only (MoCo-v3); the teacher
            calls ``image_head`` directly, so its EMA copy is never used.
        patch_tokens_via_h_norm: the student's patch tokens reach g' through h's final
            LayerNorm (the authors' routing; their backbone has no final norm). Needs an
            ``aggregator`` with a ``norm`` (the mean aggregator has none: tokens pass as is).
    """

    def __init__(self, backbone: nn.Module, image_head: nn.Module,
                 aggregator: nn.Module | None = None, patch_head: nn.Module | None = None,
                 patch_tokens_via_h_norm: bool = False,
                 predictor: nn.Module | None = None, image_from_cls: bool = False) -> None:
        super().__init__()
        self.image_from_cls = image_from_cls
        self.predictor = predictor
        self.patch_tokens_via_h_norm = patch_tokens_via_h_norm
        self.backbone = backbone
        self.image_head = image_head
        self.aggregator = aggregator
        self.patch_head = patch_head

    def image_representation(self, cls: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        """``y``: ``(B, D)`` from the [CLS] token or the aggregated ``(B, N, D)`` tokens."""
        if self.aggregator is not None and not self.image_from_cls:
            return self.aggregator(tokens, None)
        if cls is None:
            raise ValueError("the backbone has no [CLS] token and the network no aggregator")
        return cls

    def encode(self, views: list[torch.Tensor], start: int, end: int
               ) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
        """Views ``start:end`` (equal size ``S``) as one batch through the backbone.

        Returns ``(cls (nB, D) | None, tokens (nB, N, D), grid (h, w))`` with ``n = end -
        start``; row ``i * B + b`` is image ``b`` of view ``start + i``. Teacher and student
        both encode through here.
        """
        x = torch.cat(views[start:end]) if end - start > 1 else views[start]
        cls, tokens = self.backbone.forward_tokens(x)
        return cls, tokens, self.backbone.grid_shape(x.shape[-2], x.shape[-1])

    def forward(self, views: list[torch.Tensor], groups: list[tuple[int, int]],
                n_patch_views: int = 0
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Student pass over all views in one call (one call keeps DDP's hooks simple).

        Args:
            views: V tensors ``(B, 3, S_v, S_v)``; ``groups``: ``(start, end)`` runs of views
                of equal size, each encoded as one batch.
            n_patch_views: the first views that also get patch logits from g'.

        Returns:
            image logits (V x ``(B, K)``), patch logits (``n_patch_views`` x ``(B, N_v, K')``)
            and the patch tokens ``(2B, N, D)`` of the first group (for diagnostics).
        """
        image_logits: list[torch.Tensor] = []
        patch_logits: list[torch.Tensor] = []
        first_tokens = None
        for start, end in groups:
            cls, tokens, _ = self.encode(views, start, end)
            out = self.image_head(self.image_representation(cls, tokens))
            if self.predictor is not None:
                out = self.predictor(out)
            image_logits += list(out.chunk(end - start))
            if self.patch_head is not None and start < n_patch_views:
                n_views = min(end, n_patch_views) - start
                patch_tokens = tokens[: n_views * views[start].shape[0]]
                if self.patch_tokens_via_h_norm and hasattr(self.aggregator, "norm"):
                    patch_tokens = self.aggregator.norm(patch_tokens)
                patch_logits += list(self.patch_head(patch_tokens).chunk(n_views))
            if first_tokens is None:
                first_tokens = tokens.detach()
        return image_logits, patch_logits, first_tokens
