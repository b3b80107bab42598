"""ViT backbones built by name through timm, exposing patch tokens on their grid.

The SelfPatch method needs, for any crop size that is a multiple of the patch size, the
``(B, N, D)`` patch tokens and the ``(h, w)`` grid they lie on. timm's VisionTransformer does
the heavy lifting (``dynamic_img_size`` interpolates position embeddings per crop size); this
module only fixes the construction arguments so that the same backbone can later be re-created
by a plain ``timm.create_model`` call from an exported file.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import timm
import torch
from torch import nn

from selfpatch.errors import SelfPatchError

#: Short names accepted for ``model.arch``; any timm ``vit_*`` name works as well.
ARCH_ALIASES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}


@dataclass
class BackboneSpec:
    """Everything needed to rebuild a backbone: a timm model name plus keyword arguments.

    ``timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs)`` rebuilds it.
    """

    timm_name: str
    timm_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        return cls(timm_name=str(d["timm_name"]), timm_kwargs=dict(d.get("timm_kwargs", {})))


def make_backbone_spec(
    arch: str,
    patch_size: int = 0,
    img_size: int = 224,
    class_token: bool = False,
) -> BackboneSpec:
    """Resolve ``arch`` (alias or timm name) and options into a :class:`BackboneSpec`.

    Args:
        arch: ``vit_tiny`` / ``vit_small`` / ``vit_base`` or any timm ``vit_*`` name.
        patch_size: patch side in pixels; 0 keeps the architecture's own.
        img_size: nominal (global-crop) size; other sizes still work (dynamic position
            embeddings), this only sets the stored position-embedding grid.
        class_token: keep timm's [CLS] token. SelfPatch does not need one (the aggregation
            module makes the image representation); plain DINO uses it.
    """
    name = ARCH_ALIASES.get(arch, arch)
    if not name.startswith("vit_") or name not in timm.list_models("vit_*"):
        raise SelfPatchError(
            f"model.arch={arch!r} is not a known timm ViT; use one of "
            f"{sorted(ARCH_ALIASES)} or a timm name such as vit_small_patch8_224"
        )
    kwargs: dict[str, Any] = {
        "num_classes": 0,
        "img_size": int(img_size),
        "dynamic_img_size": True,
        "class_token": bool(class_token),
        # Without a [CLS] token timm would pool by averaging and move the final norm into
        # fc_norm; keeping `norm` makes forward_features return normalised patch tokens.
        "global_pool": "token" if class_token else "avg",
        "fc_norm": False,
    }
    if patch_size:
        kwargs["patch_size"] = int(patch_size)
    return BackboneSpec(timm_name=name, timm_kwargs=kwargs)


class ViTBackbone(nn.Module):
    """A timm VisionTransformer that returns patch tokens and their grid.

    Shapes: images ``(B, 3, H, W)`` with ``H`` and ``W`` multiples of ``patch_size`` give
    patch tokens ``(B, N, D)`` with ``N = (H / p) * (W / p)`` in row-major grid order.
    """

    def __init__(self, spec: BackboneSpec, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.vit = timm.create_model(
            spec.timm_name, pretrained=False, drop_path_rate=drop_path_rate, **spec.timm_kwargs
        )
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        self.embed_dim = int(self.vit.embed_dim)
        self.num_heads = int(self.vit.blocks[0].attn.num_heads)
        self.num_prefix_tokens = int(self.vit.num_prefix_tokens)
        # Evaluation only: run the transformer under autocast to this dtype and return float32
        # (selfpatch.runtime picks it). Training sets autocast around the whole step instead.
        self.inference_dtype: torch.dtype | None = None

    def _autocast(self, images: torch.Tensor):
        if self.inference_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(images.device.type, dtype=self.inference_dtype)

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """Grid ``(h, w)`` of an ``height x width`` image; raises if not divisible."""
        p = self.patch_size
        if height % p or width % p:
            raise SelfPatchError(
                f"crop size {height}x{width} is not a multiple of the patch size {p}; "
                f"choose crop sizes divisible by {p}"
            )
        return height // p, width // p

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(cls, patches)``: ``(B, D)`` or ``None``, and ``(B, N, D)`` after the final norm."""
        self.grid_shape(images.shape[-2], images.shape[-1])
        features = self.__dict__.get("_compiled_features") or self.vit.forward_features
        with self._autocast(images):
            tokens = features(images)
        if self.inference_dtype is not None:
            tokens = tokens.float()
        cls = tokens[:, 0] if self.vit.cls_token is not None else None
        return cls, tokens[:, self.num_prefix_tokens :]

    def compile(self, *args, **kwargs) -> None:  # noqa: A003 - mirrors nn.Module.compile
        """``torch.compile`` the transformer's feature pass in place; state-dict keys unchanged."""
        self.__dict__["_compiled_features"] = torch.compile(self.vit.forward_features, *args,
                                                            **kwargs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``(B, N, D)`` after the final LayerNorm."""
        return self.forward_tokens(images)[1]

    @torch.no_grad()
    def last_self_attention(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax self-attention of the last block, ``(B, heads, T, T)``.

        ``T = num_prefix_tokens + N``; prefix tokens (if any) come first. Computed explicitly
        because timm's fused attention never materialises the weights.
        """
        with self._autocast(images):
            return self._last_self_attention(images).float()

    def _last_self_attention(self, images: torch.Tensor) -> torch.Tensor:
        self.grid_shape(images.shape[-2], images.shape[-1])
        vit = self.vit
        x = vit.patch_embed(images)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        for blk in vit.blocks[:-1]:
            x = blk(x)
        last = vit.blocks[-1]
        attn = last.attn
        y = last.norm1(x)
        b, t, d = y.shape
        qkv = attn.qkv(y).reshape(b, t, 3, attn.num_heads, d // attn.num_heads)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        logits = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        return logits.softmax(dim=-1)
