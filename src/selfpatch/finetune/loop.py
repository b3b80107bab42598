"""What the fine-tuning loops share: AdamW parameter groups and one optimisation step."""

from __future__ import annotations

import torch

from selfpatch.errors import SelfPatchError


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
