"""Gaussian blur for the multi-crop views (both paths).

Blur kernel size. DINO blurred PIL images with ``radius = sigma`` in pixels and no kernel
truncation; v2 needs an odd kernel size. Sigma stays in pixels (0.1-2.0, as DINO, at every
crop size), so the kernel must cover about +-3 sigma = 13 px to keep the Gaussian whole; the
SimCLR/BYOL convention, which most DINO re-implementations carry, is ~10% of the crop side
(23 px at 224). :func:`blur_kernel_size` takes the larger of the two (odd), and caps it at
``2 * crop - 1`` so that reflection padding stays valid on tiny crops. The blur itself is
:func:`gaussian_blur`, a separable version of v2's ``gaussian_blur`` (same kernel, same
reflection padding, same output to float rounding): v2 convolves with the full ``K x K``
kernel, which at K=23 cost 11 ms per 224 px crop on one CPU core, more than the rest of the
view together; the separable form takes about 1.5 ms.
"""


from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision import tv_tensors

BLUR_SIGMA = (0.1, 2.0)  # pixels, whatever the crop size (DINO)


def blur_kernel_size(crop_size: int) -> int:
    """Odd Gaussian kernel size for a ``crop_size`` px crop (see the module docstring)."""
    covers_sigma = 2 * math.ceil(3 * BLUR_SIGMA[1]) + 1
    tenth = round(crop_size / 10) | 1  # "| 1" makes it odd
    return min(max(covers_sigma, tenth), 2 * crop_size - 1)


def _gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """``(N, K)`` normalised 1-D Gaussians, one per ``sigma`` (``(N,)``, in pixels)."""
    offsets = torch.arange(kernel_size, device=sigma.device, dtype=sigma.dtype)
    offsets = offsets - (kernel_size - 1) / 2
    kernels = torch.softmax(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2, dim=1)
    # Small sigmas leave taps near exp(-90): subnormal floats, which x86 CPUs handle many
    # times slower than normal ones. Taps below 1e-12 change no pixel value; drop them.
    return torch.where(kernels < 1e-12, torch.zeros_like(kernels), kernels)


def _blur_matrix(kernels: Tensor, n: int) -> Tensor:
    """``(N, n, n)`` matrices that convolve a length-``n`` signal with each ``(N, K)`` kernel,
    reflection padding folded in (row ``i`` holds the taps for output ``i``)."""
    count, k = kernels.shape
    pad = k // 2
    index = torch.arange(n, device=kernels.device)[:, None] + torch.arange(k, device=kernels.device)
    index = (index - pad).abs()  # reflect at the start: -j -> j
    index = torch.where(index > n - 1, 2 * (n - 1) - index, index)  # ... and at the end
    matrix = torch.zeros(count, n, n, device=kernels.device, dtype=kernels.dtype)
    taps = kernels[:, None, :].expand(count, n, k)
    return matrix.scatter_add_(2, index.expand(count, n, k), taps)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image with its own sigma: ``(N, C, H, W)`` float, ``(N,)`` -> ``(N, C, H, W)``.

    Same result as torchvision v2's ``gaussian_blur`` (a ``K x K`` kernel that is the outer
    product of these 1-D Gaussians, reflection padding), computed separably as
    ``Rows @ image @ Cols^T`` with banded matrices: matrix products are fast on CPU and GPU
    alike, whereas PyTorch's CPU depthwise ``K x 1`` convolution took 5 ms per 224 px crop.
    Needs ``kernel_size // 2 < min(H, W)``, like reflection padding.
    """
    n, _, h, w = images.shape
    if n == 0:
        return images
    kernels = _gaussian_kernels(sigma.to(images.dtype), kernel_size)
    rows = _blur_matrix(kernels, h)[:, None]
    cols = rows if w == h else _blur_matrix(kernels, w)[:, None]
    return rows @ images @ cols.transpose(-1, -2)


class RandomGaussianBlur(torch.nn.Module):
    """v2-style transform: with probability ``p`` blur a ``(C, H, W)`` tensor, sigma ~ U(range).

    Draws its randomness like ``v2.RandomApply([v2.GaussianBlur(k, sigma)], p)``; uint8 input
    is blurred in float and rounded back, as v2 does.
    """

    def __init__(self, kernel_size: int, sigma: tuple[float, float] = BLUR_SIGMA, p: float = 1.0):
        super().__init__()
        self.kernel_size, self.sigma, self.p = kernel_size, sigma, p

    def forward(self, image: Tensor) -> Tensor:
        if self.p < 1.0 and torch.rand(1).item() >= self.p:
            return image
        sigma = torch.empty(1).uniform_(*self.sigma)
        x = image.as_subclass(Tensor)
        x = x if x.is_floating_point() else x.float()
        planes = x.reshape(-1, *x.shape[-3:])  # one sigma for the whole input, as v2
        out = gaussian_blur(planes, sigma.to(x.device).expand(planes.shape[0]), self.kernel_size)
        out = out.reshape(image.shape)
        if not image.is_floating_point():
            out = out.round_().to(image.dtype)
        # Keep the tv_tensors type so that later v2 transforms still see an image.
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, p={self.p}"
