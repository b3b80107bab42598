"""DINO projection head: 3-layer MLP, L2-normalised bottleneck, weight-normalised last layer.

Written here because neither timm nor torchvision ships it (lightly does, but a dependency
for 30 lines is not worth it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """``(..., in_dim) -> (..., out_dim)`` logits.

    MLP (``nlayers`` Linear layers with GELU, hidden ``hidden_dim``) to a ``bottleneck_dim``
    vector, L2-normalised, then a weight-normalised linear layer without bias. With
    ``norm_last_layer`` the weight norm's magnitude is fixed to 1 (DINO's stabiliser).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, nlayers: int = 3, norm_last_layer: bool = True) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (max(nlayers, 1) - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, eps=1e-6)
        # The prototype scores are divided by temperatures as low as 0.04: under bf16 autocast
        # their rounding (~0.1 logit) would be amplified, so this layer always runs in fp32.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.last_layer(x.float())
