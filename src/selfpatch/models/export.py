"""Export the teacher backbone as a safetensors file that plain timm loads.

``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), **kwargs)``
with the ``name``/``kwargs`` stored in the file's metadata (and printed by ``selfpatch export``)
rebuilds the exact backbone; see docs/method.md.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from selfpatch.checkpoint import backbone_state, load_training_checkpoint, resolve_checkpoint_path
from selfpatch.io import atomic_write
from selfpatch.models.backbone import BackboneSpec
from selfpatch.models.loading import backbone_export_metadata


def export_backbone(source: str | Path, out: str | Path | None = None,
                    which: str = "teacher") -> tuple[Path, BackboneSpec]:
    """Write ``which`` (teacher by default) backbone of a run/checkpoint to safetensors.

    Returns the written path and the spec (timm name + kwargs) needed to load it.
    """
    ckpt_path = resolve_checkpoint_path(source)
    ckpt = load_training_checkpoint(ckpt_path)
    spec = BackboneSpec.from_dict(ckpt["backbone_spec"])
    state = backbone_state(ckpt, which)
    if out is None:
        out = ckpt_path.parent.parent / f"{which}_backbone.safetensors"
    meta = {"selfpatch.step": str(ckpt.get("step")), "selfpatch.source": str(ckpt_path)}
    return write_backbone(state, spec, out, meta), spec


def export_converted(source: str | Path, fmt: str, out: str | Path | None = None,
                     which: str = "teacher") -> Path:
    """Write ``which`` backbone of a run/checkpoint (or a ``.safetensors`` export) in the key
    layout ``fmt`` of :mod:`selfpatch.models.convert` as a ``.pth`` (atomically)."""
    from selfpatch.checkpoint import atomic_save
    from selfpatch.models.convert import convert

    if str(source).endswith(".safetensors"):
        from safetensors.torch import load_file

        state, default = load_file(str(source)), Path(source).with_suffix("")
    else:
        ckpt_path = resolve_checkpoint_path(source)
        state = backbone_state(load_training_checkpoint(ckpt_path), which)
        default = ckpt_path.parent.parent / f"{which}_backbone"
    converted = convert(state, fmt)
    return atomic_save(converted, out or default.with_name(f"{default.name}_{fmt}.pth"))


def write_backbone(state: dict, spec: BackboneSpec, out: str | Path,
                   extra_meta: dict[str, str] | None = None) -> Path:
    """Write a timm ViT state dict to ``out`` (safetensors, atomically) with the metadata
    :func:`~selfpatch.models.loading.load_backbone` and plain timm need to rebuild it."""
    meta = {**backbone_export_metadata(spec), **(extra_meta or {})}
    tensors = {k: v.contiguous() for k, v in state.items()}
    return atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta))


def timm_load_snippet(path: Path, spec: BackboneSpec) -> str:
    """The Python lines that load an export with timm alone."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in spec.timm_kwargs.items())
    note = ("# trained with DINO's position-embedding resizing (model.fidelity=reference): at "
            "sizes other than img_size, timm's own resizing gives slightly different tokens\n"
            if spec.pos_resize == "reference" else "")
    return (f"{note}import timm\nmodel = timm.create_model({spec.timm_name!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={str(path)!r}), {kwargs})")
