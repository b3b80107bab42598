"""ViT backbones built by name through timm, exposing patch tokens on their grid.

The SelfPatch method needs, for any crop size that is a multiple of the patch size, the
``(B, N, D)`` patch tokens and the ``(h, w)`` grid they lie on. timm's VisionTransformer does
the heavy lifting (``dynamic_img_size`` interpolates position embeddings per crop size); this
module only fixes the construction arguments so that the same backbone can later be re-created
by a plain ``timm.create_model`` call from an exported file.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from selfpatch.errors import SelfPatchError

#: timm's own 6-block, 64-wide ViT for fast tests (timm >= 1.0.10): a plain VisionTransformer,
#: ~20x fewer FLOPs than vit_tiny, so the test suite exercises every code path in seconds.
TEST_VIT = "test_vit"

#: Short names accepted for ``model.arch``; any timm ``vit_*`` name works as well.
ARCH_ALIASES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "swin_tiny": "swin_tiny_patch4_window7_224",
}


@dataclass
class BackboneSpec:
    """Everything needed to rebuild a backbone: a timm model name plus keyword arguments.

    ``timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs)`` rebuilds it.
    ``pos_resize`` says how position embeddings reach other grid sizes: ``timm``
    (``resample_abs_pos_embed``: bicubic to the exact size, antialiased) or ``reference``
    (DINO's and the SelfPatch authors' ``interpolate_pos_encoding``: bicubic with
    ``scale_factor = (n + 0.1) / n0``, no antialiasing). Plain timm always does ``timm``.
    """

    timm_name: str
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    pos_resize: str = "timm"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        return cls(timm_name=str(d["timm_name"]), timm_kwargs=dict(d.get("timm_kwargs", {})),
                   pos_resize=str(d.get("pos_resize", "timm")))


def make_backbone_spec(
    arch: str,
    patch_size: int = 0,
    img_size: int = 224,
    class_token: bool = False,
    final_norm: bool = True,
    pos_resize: str = "timm",
) -> BackboneSpec:
    """Resolve ``arch`` (alias or timm name) and options into a :class:`BackboneSpec`.

    Args:
        arch: ``vit_tiny`` / ``vit_small`` / ``vit_base`` or any timm ``vit_*`` name (or
            timm's ``test_vit``, a 6-block 64-wide ViT for tests and smoke runs); or
            ``swin_tiny`` / a timm ``swin_*`` name (:class:`SwinBackbone`: the other options
            except ``img_size`` do not apply and must keep their defaults).
        patch_size: patch side in pixels; 0 keeps the architecture's own.
        img_size: nominal (global-crop) size; other sizes still work (dynamic position
            embeddings), this only sets the stored position-embedding grid.
        class_token: keep timm's [CLS] token. SelfPatch does not need one (the aggregation
            module makes the image representation); plain DINO uses it.
        final_norm: keep the final LayerNorm (False: raw last-block tokens, as the SelfPatch
            authors' ViT; needs a timm with the ``final_norm`` argument).
        pos_resize: ``timm`` or ``reference`` (see :class:`BackboneSpec`).
    """
    if pos_resize not in POS_RESIZES:
        raise SelfPatchError(f"pos_resize={pos_resize!r} is not one of {POS_RESIZES}")
    name = ARCH_ALIASES.get(arch, arch)
    if name.startswith("swin_") and name in timm.list_models("swin_*"):
        if patch_size or not final_norm or pos_resize != "timm":
            raise SelfPatchError(f"model.arch={arch!r}: a Swin keeps its own patch size (4), "
                                 "final norm and relative positions; set model.patch_size=0 "
                                 "and model.fidelity=default")
        return BackboneSpec(timm_name=name, timm_kwargs={
            "num_classes": 0, "img_size": int(img_size), "dynamic_img_size": True,
            "strict_img_size": False})
    if name not in timm.list_models(["vit_*", TEST_VIT]):
        raise SelfPatchError(
            f"model.arch={arch!r} is not a known timm ViT or Swin; use one of "
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
    if not final_norm:  # only when asked, so default specs load with any timm >= 1.0
        from timm.models.vision_transformer import VisionTransformer

        if "final_norm" not in inspect.signature(VisionTransformer.__init__).parameters:
            raise SelfPatchError(f"a ViT without final norm needs timm >= 1.0.11 (this is "
                                 f"{timm.__version__}); pip install -U timm")
        kwargs["final_norm"] = False
    return BackboneSpec(timm_name=name, timm_kwargs=kwargs, pos_resize=pos_resize)


POS_RESIZES = ("timm", "reference")


def reference_pos_embed(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``VisionTransformer._pos_embed`` with DINO's resizing of the position table.

    ``x``: ``(B, H, W, D)`` patch embeddings (``dynamic_img_size``) -> ``(B, T, D)`` tokens
    with prefix tokens and position embeddings added. For a grid other than the stored
    ``(h0, w0)`` the table is resized by ``F.interpolate(..., scale_factor=((H + 0.1) / h0,
    (W + 0.1) / w0), mode="bicubic")`` without antialiasing, DINO's
    ``interpolate_pos_encoding`` (the 0.1 makes the output exactly ``H x W``).
    """
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    n_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    prefix_pos, grid_pos = vit.pos_embed[:, :n_prefix], vit.pos_embed[:, n_prefix:]
    h0, w0 = vit.patch_embed.grid_size
    if (h, w) != (h0, w0):
        table = grid_pos.reshape(1, h0, w0, d).permute(0, 3, 1, 2)
        table = F.interpolate(table.float(), scale_factor=((h + 0.1) / h0, (w + 0.1) / w0),
                              mode="bicubic").to(grid_pos.dtype)
        grid_pos = table.permute(0, 2, 3, 1).reshape(1, h * w, d)
    prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
    if vit.no_embed_class:
        x = torch.cat(prefix + [x + grid_pos], dim=1)
    else:
        x = torch.cat(prefix + [x], dim=1) + torch.cat([prefix_pos, grid_pos], dim=1)
    return vit.pos_drop(x)


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
        if spec.pos_resize == "reference":
            # An instance attribute shadows the method: forward_features calls it as usual.
            self.vit._pos_embed = functools.partial(reference_pos_embed, self.vit)
        elif spec.pos_resize != "timm":
            raise SelfPatchError(f"backbone pos_resize={spec.pos_resize!r} is not one of "
                                 f"{POS_RESIZES}")
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        self.has_global_attention = True  # last_self_attention gives a (T, T) map
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


class SwinBackbone(ViTBackbone):
    """A timm Swin Transformer seen through the ViT interface: last-stage tokens on their grid.

    The "patch" is the last stage's stride (32 px for ``swin_tiny``: a 224 px crop gives a 7x7
    grid, 96 px 3x3); inputs must be multiples of it (timm pads to whole windows inside).
    There is no [CLS] token: ``forward_tokens`` returns the average of the tokens in its place
    (Swin's and MoBY's image representation). ``vit`` holds the timm model (the attribute name
    is shared with :class:`ViTBackbone` so checkpoints keep one key layout).
    """

    def __init__(self, spec: BackboneSpec, drop_path_rate: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.spec = spec
        self.vit = timm.create_model(spec.timm_name, pretrained=False,
                                     drop_path_rate=drop_path_rate, **spec.timm_kwargs)
        self.patch_size = int(self.vit.patch_embed.patch_size[0]) * 2 ** (len(self.vit.layers) - 1)
        self.embed_dim = int(self.vit.num_features)
        last_block = self.vit.layers[-1].blocks[-1]
        self.num_heads = int(last_block.attn.num_heads)
        self.num_prefix_tokens = 0
        self.has_global_attention = False
        self.inference_dtype = None

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean token (B, D), tokens (B, N, D))`` of the last stage, after the final norm."""
        self.grid_shape(images.shape[-2], images.shape[-1])
        features = self.__dict__.get("_compiled_features") or self.vit.forward_features
        with self._autocast(images):
            tokens = features(images)  # (B, h, w, D)
        if self.inference_dtype is not None:
            tokens = tokens.float()
        tokens = tokens.flatten(1, 2)
        return tokens.mean(dim=1), tokens

    def last_self_attention(self, images: torch.Tensor) -> torch.Tensor:
        raise SelfPatchError("a Swin backbone has no global self-attention to draw (its "
                             "attention is within shifted windows)")


def build_backbone_from_spec(spec: BackboneSpec, drop_path_rate: float = 0.0) -> ViTBackbone:
    """:class:`SwinBackbone` for timm ``swin_*`` names, :class:`ViTBackbone` otherwise."""
    cls = SwinBackbone if spec.timm_name.startswith("swin_") else ViTBackbone
    return cls(spec, drop_path_rate=drop_path_rate)
