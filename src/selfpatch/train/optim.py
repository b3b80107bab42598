"""AdamW parameter groups and DINO's per-parameter gradient clipping."""

from __future__ import annotations

import torch
from torch import nn


def parameter_groups(model: nn.Module) -> list[dict]:
    """Two groups: weight-decayed (matrices) and not (biases, norms, any 1-D parameter)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "no_decay": True}]


def build_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; fused kernels on CUDA, foreach elsewhere (lr/wd are set every step)."""
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(parameter_groups(model), lr=0.0, **kwargs)


@torch.no_grad()
def clip_gradients_per_parameter(params: list[nn.Parameter], clip: float) -> torch.Tensor:
    """Scale each parameter's gradient so its L2 norm is at most ``clip`` (as DINO does,
    per parameter rather than globally). Returns the global pre-clip norm (a tensor; no sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(clip / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)
    return torch.linalg.vector_norm(torch.stack(norms))


@torch.no_grad()
def gradient_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """Global L2 norm of the gradients (a tensor; no host sync); 0 when there are none."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
