"""Load a backbone from a run directory, a training checkpoint, an exported file or a name.

Sources accepted by :func:`load_backbone` (the evaluation entry points take the same strings):

- a run directory (``runs/x``): its ``checkpoints/last.pt``;
- a training checkpoint ``*.pt`` written by ``selfpatch pretrain`` (the *teacher* backbone is
  used, as DINO does for evaluation);
- an exported ``*.safetensors`` file written by ``selfpatch export``;
- a fine-tuned model written by ``selfpatch finetune seg|det`` (``OUT/models/*.safetensors``):
  its fine-tuned backbone;
- ``random:ARCH`` or ``random:ARCH:PATCH`` (e.g. ``random:vit_tiny:8``): random weights, for
  baselines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from selfpatch.checkpoint import (
    aggregator_settings,
    backbone_state,
    load_training_checkpoint,
    module_state,
    resolve_checkpoint_path,
)
from selfpatch.errors import SelfPatchError
from selfpatch.models.aggregation import build_aggregator
from selfpatch.models.backbone import (
    BackboneSpec,
    ViTBackbone,
    build_backbone_from_spec,
    make_backbone_spec,
)

EXPORT_META_NAME = "selfpatch.timm_name"
EXPORT_META_KWARGS = "selfpatch.timm_kwargs"
EXPORT_META_POS_RESIZE = "selfpatch.pos_resize"
# in fine-tuned model files: where the backbone's keys start (e.g. ``pyramid.backbone.vit.``)
EXPORT_META_PREFIX = "selfpatch.backbone_prefix"


def backbone_export_metadata(spec: BackboneSpec, prefix: str = "") -> dict[str, str]:
    """The safetensors metadata that lets :func:`load_backbone` rebuild ``spec``'s backbone
    from a file whose backbone keys start with ``prefix``."""
    meta = {EXPORT_META_NAME: spec.timm_name, EXPORT_META_KWARGS: json.dumps(spec.timm_kwargs),
            EXPORT_META_POS_RESIZE: spec.pos_resize}
    return meta | ({EXPORT_META_PREFIX: prefix} if prefix else {})


def load_backbone_state(vit: torch.nn.Module, state: dict, origin: str) -> None:
    """Load a timm state dict into ``vit``, turning shape/key mismatches into one clear line."""
    own = vit.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = (wrong and f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)} "
                  f"but the model has {tuple(own[wrong[0]].shape)}") or (
            missing and f"missing {missing[0]}") or f"unexpected {unexpected[0]}"
        raise SelfPatchError(
            f"{origin} holds weights of another architecture ({detail}); "
            "build the same model.arch / model.patch_size as the checkpoint"
        )
    vit.load_state_dict(state)


def _load_export(path: Path) -> ViTBackbone:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if EXPORT_META_NAME not in meta:
        what = ("a fine-tuned model from an older selfpatch; fine-tune it again"
                if meta.get("format") == "selfpatch-finetuned"
                else "not an export; export it with `selfpatch export`")
        raise SelfPatchError(f"{path} has no {EXPORT_META_NAME} metadata ({what})")
    spec = BackboneSpec(meta[EXPORT_META_NAME], json.loads(meta.get(EXPORT_META_KWARGS, "{}")),
                        pos_resize=meta.get(EXPORT_META_POS_RESIZE, "timm"))
    backbone = build_backbone_from_spec(spec)
    state = load_file(str(path))
    prefix = meta.get(EXPORT_META_PREFIX, "")
    if prefix:  # a whole fine-tuned model: keep the backbone's keys only
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    load_backbone_state(backbone.vit, state, str(path))
    return backbone


def load_backbone(source: str | Path, device: str | torch.device = "cpu",
                  which: str = "teacher") -> ViTBackbone:
    """Build a frozen, eval-mode :class:`ViTBackbone` from any accepted source (module doc)."""
    text = str(source)
    if text.startswith("random:"):
        parts = text.split(":")
        patch = int(parts[2]) if len(parts) > 2 and parts[2] else 0
        torch.manual_seed(0)
        backbone = build_backbone_from_spec(make_backbone_spec(parts[1], patch_size=patch))
    elif text.endswith(".safetensors"):
        if not Path(text).is_file():
            raise SelfPatchError(f"exported backbone {text} does not exist; check the path")
        backbone = _load_export(Path(text))
    else:
        ckpt = load_training_checkpoint(text)
        backbone = build_backbone_from_spec(BackboneSpec.from_dict(ckpt["backbone_spec"]))
        load_backbone_state(backbone.vit, backbone_state(ckpt, which), text)
    backbone.eval().requires_grad_(False)
    return backbone.to(device)


def describe_source(source: str | Path) -> dict[str, Any]:
    """Small description for reports: the resolved path and, for checkpoints, the config."""
    text = str(source)
    if text.startswith("random:") or text.endswith(".safetensors"):
        return {"source": text}
    ckpt = load_training_checkpoint(text)
    return {"source": str(resolve_checkpoint_path(text)), "config": ckpt.get("config", {}),
            "step": ckpt.get("step"), "epoch": ckpt.get("epoch")}


class ImageEmbedder(torch.nn.Module):
    """``(B, 3, H, W) -> (B, D)``: a backbone plus the method's own image representation."""

    def __init__(self, backbone: ViTBackbone, aggregator: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.aggregator = backbone, aggregator
        self.kind = "aggregator" if aggregator is not None else (
            "cls" if backbone.num_prefix_tokens else "mean")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cls, tokens = self.backbone.forward_tokens(images)
        if self.aggregator is not None:
            return self.aggregator(tokens, None)
        return cls if cls is not None else tokens.mean(dim=1)


def load_image_embedder(source: str | Path, device: str | torch.device = "cpu",
                        backbone: ViTBackbone | None = None) -> ImageEmbedder:
    """The image representation used for k-NN, as each method defines it.

    SelfPatch checkpoints: the teacher's aggregation module over all patch tokens (paper
    Eq. 4); plain DINO checkpoints and backbones with a [CLS] token: the [CLS] token; other
    backbones (random, exported without [CLS]): mean-pooled patch tokens. ``backbone``: the
    source's backbone when already loaded (it is then shared, not loaded again).
    """
    if backbone is None:
        backbone = load_backbone(source, device)
    text = str(source)
    aggregator = None
    if not (text.startswith("random:") or text.endswith(".safetensors")):
        ckpt = load_training_checkpoint(text)
        settings = aggregator_settings(ckpt)
        if settings is not None:
            kind, depth = settings
            aggregator = build_aggregator(kind, backbone.embed_dim, backbone.num_heads, depth)
            aggregator.load_state_dict(module_state(ckpt, "teacher.aggregator."))
            aggregator = aggregator.eval().requires_grad_(False).to(device)
    return ImageEmbedder(backbone, aggregator).eval()
