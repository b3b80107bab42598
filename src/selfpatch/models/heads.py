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

    ``use_bn`` adds BatchNorm after each hidden Linear (DINO's ``--use_bn_in_head``). It
    always normalises with the statistics of the batch it is given (all leading dimensions
    flattened, so every token of a ``(B, N, D)`` input counts): DINO's teacher runs in train
    mode and so uses batch statistics, while the teacher here runs in eval mode, and running
    statistics would not be EMA-updated with the weights. Under DDP the statistics are per
    device (DINO converts to SyncBatchNorm). ``l2_eps`` guards the bottleneck normalisation
    (the reference code uses torch's default 1e-12).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, nlayers: int = 3, norm_last_layer: bool = True,
                 use_bn: bool = False, l2_eps: float = 1e-6) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (max(nlayers, 1) - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                if use_bn:
                    layers.append(nn.BatchNorm1d(dims[i + 1], track_running_stats=False))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.l2_eps = l2_eps
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
        lead = x.shape[:-1]
        x = F.normalize(self.mlp(x.reshape(-1, x.shape[-1])), dim=-1, eps=self.l2_eps)
        x = x.reshape(*lead, x.shape[-1])
        # The prototype scores are divided by temperatures as low as 0.04: under bf16 autocast
        # their rounding (~0.1 logit) would be amplified, so this layer always runs in fp32.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.last_layer(x.float())


class ProjectionMLP(nn.Module):
    """Projector / predictor MLP of MoCo-v3 and MoBY: ``(B, in_dim) -> (B, out_dim)``.

    ``num_layers`` Linear layers (with or without ``bias``); BatchNorm and ReLU after each
    hidden one, and a BatchNorm without affine parameters after the last when ``last_bn``
    (MoCo-v3's projector: ``bias=False, last_bn=True``; its predictor: ``bias=False,
    last_bn=False``; MoBY's both: ``bias=True, last_bn=False``). As in :class:`DINOHead`,
    BatchNorm always uses the batch's statistics (their momentum encoders run in train mode;
    the teacher here runs in eval mode).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int,
                 last_bn: bool = False, bias: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be >= 1")
        layers: list[nn.Module] = []
        for i in range(num_layers):
            d_in = in_dim if i == 0 else hidden_dim
            d_out = out_dim if i == num_layers - 1 else hidden_dim
            layers.append(nn.Linear(d_in, d_out, bias=bias))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(d_out, track_running_stats=False), nn.ReLU(inplace=True)]
            elif last_bn:
                layers.append(nn.BatchNorm1d(d_out, affine=False, track_running_stats=False))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
