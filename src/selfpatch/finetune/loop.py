"""What the fine-tuning commands share: parameter groups, one optimisation step, the saved
model, the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from selfpatch.errors import SelfPatchError
from selfpatch.io import atomic_write


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, position embeddings and tokens (as
    the paper's mmseg / mmdet configs)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def optimisation_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float,
                      it: int, iters: int, task: str, log=print) -> float:
    """Set ``lr``, back-propagate ``loss`` and step; a non-finite loss is a one-line error
    (before the step). Logs five times per run; returns the loss value."""
    value = float(loss.detach())
    if not torch.isfinite(loss.detach()):
        raise SelfPatchError(f"finetune {task}: the loss became {value} at iteration {it}; "
                             "lower --lr")
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if log and (it + 1) % max(1, iters // 5) == 0:
        log(f"finetune {task}: iteration {it + 1}/{iters}, loss {value:.3f}")
    return value


def save_finetuned(model: torch.nn.Module, out: Path, index: int, source: str,
                   task: str) -> Path:
    """Write the fine-tuned model's ``state_dict`` (backbone, pyramid and head) as
    ``out/models/<index>-<source>.safetensors`` (atomically; the source and task in its
    metadata) and return the path. Load it into the same ``build_model`` / ``SemanticFPN``;
    the metadata also names the backbone's architecture and key prefix, so
    :func:`~selfpatch.models.loading.load_backbone` (every ``eval`` command) takes the file
    as a backbone source too."""
    from safetensors.torch import save_file

    from selfpatch.models.loading import backbone_export_metadata

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("_")[-80:]
    path = out / "models" / f"{index:02d}-{slug}.safetensors"
    # safetensors refuses shared or strided storage: give it plain contiguous copies
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    backbones = [(name, m) for name, m in model.named_modules()
                 if hasattr(m, "spec") and hasattr(m, "vit")]
    meta = {"source": source, "task": task, "format": "selfpatch-finetuned"}
    if len(backbones) == 1:  # the pyramid wraps exactly one ViT/Swin backbone
        name, backbone = backbones[0]
        meta |= backbone_export_metadata(backbone.spec, prefix=f"{name}.vit.")
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def write_report(out: Path, rows: list[dict], title: str, description: str,
                 columns: list[tuple[str, str]]) -> Path:
    """``report.json`` (every row in full) and ``report.md`` (``title``, ``description`` and
    one table row per checkpoint with the ``(key, header)`` columns, numbers to 1 decimal)
    into ``out``; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
    lines = [f"# {title}", "", description, "",
             "| checkpoint | " + " | ".join(h for _, h in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for r in rows:
        cells = [f"{r[k]:.3f}" if k == "train_loss" else f"{r[k]:.1f}" for k, _ in columns]
        lines.append(f"| {r['source']} | " + " | ".join(cells) + " |")
    md = out / "report.md"
    atomic_write(md, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return md
