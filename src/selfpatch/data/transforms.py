"""Multi-crop views with DINO's augmentations: 2 global crops and ``n_local`` local crops.

Two ways to make the same views:

- :class:`MultiCropTransform` runs per image inside the DataLoader workers (CPU), with
  torchvision transforms v2. Collate its samples with :func:`multicrop_collate`.
- :class:`GpuMultiCrop` moves the augmentations onto the training device for runs whose
  loader cannot keep up: the workers only decode and resize each image to a fixed
  ``(3, S, S)`` uint8 tensor (:class:`PrepareForGpu`, collated by
  :func:`gpu_multicrop_collate`), then one batched call makes all views with per-sample
  random parameters drawn from the same distributions as the CPU path.

The augmentations are DINO's ``DataAugmentationDINO`` (Caron et al. 2021):

======================  =========================================================
view                    operations, in order
======================  =========================================================
global 1                RandomResizedCrop(G, global_scale, bicubic), flip p=0.5,
                        ColorJitter(0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2
                        (``color_jitter``, ``color_jitter_p``, ``grayscale_p``),
                        Gaussian blur (sigma 0.1-2.0) p=1.0
global 2                as global 1 but blur p=0.1, then solarize(128) p=0.2
local (x n_local)       RandomResizedCrop(L, local_scale, bicubic), flip, colour
                        and grayscale as above, blur p=0.5
all                     to float in [0, 1], Normalize(ImageNet mean, std)
======================  =========================================================

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
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

from selfpatch.errors import SelfPatchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BLUR_SIGMA = (0.1, 2.0)  # pixels, whatever the crop size (DINO)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's default aspect range, kept by DINO
JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
JITTER_P = 0.8
GRAYSCALE_P = 0.2
SOLARIZE_THRESHOLD = 128  # on 0..255 values
SOLARIZE_P = 0.2
GLOBAL_BLUR_P = (1.0, 0.1)
LOCAL_BLUR_P = 0.5
# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale on tensors.
_LUMA = (0.2989, 0.587, 0.114)


def blur_kernel_size(crop_size: int) -> int:
    """Odd Gaussian kernel size for a ``crop_size`` px crop (see the module docstring)."""
    covers_sigma = 2 * math.ceil(3 * BLUR_SIGMA[1]) + 1
    tenth = round(crop_size / 10) | 1  # "| 1" makes it odd
    return min(max(covers_sigma, tenth), 2 * crop_size - 1)


@dataclass(frozen=True)
class MultiCropConfig:
    """Crop sizes and scales; defaults are the paper's (SelfPatch uses global scale (0.25, 1)).

    ``blur_kernel`` None picks :func:`blur_kernel_size` per crop size; an int (odd) is used
    for every crop. Any size works; multiples of the backbone's patch size are what train.
    """

    global_size: int = 224
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.25)
    n_local: int = 8
    blur_kernel: int | None = None
    color_jitter: tuple[float, float, float, float] = JITTER  # brightness, contrast, sat., hue
    color_jitter_p: float = JITTER_P
    grayscale_p: float = GRAYSCALE_P

    def __post_init__(self) -> None:
        jitter = tuple(float(v) for v in self.color_jitter)
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise SelfPatchError(
                "data.color_jitter must be [brightness, contrast, saturation, hue], each >= 0 "
                f"and hue <= 0.5, got {self.color_jitter!r}")
        object.__setattr__(self, "color_jitter", jitter)
        for name in ("color_jitter_p", "grayscale_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not 0.0 <= value <= 1.0:
                raise SelfPatchError(f"data.{name} must be a probability in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("global_size", "local_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SelfPatchError(f"data.{name} must be a positive integer, got {value!r}")
        if isinstance(self.n_local, bool) or not isinstance(self.n_local, int) or self.n_local < 0:
            raise SelfPatchError(f"data.n_local must be an integer >= 0, got {self.n_local!r}")
        for name in ("global_scale", "local_scale"):
            scale = tuple(getattr(self, name))
            if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
                raise SelfPatchError(
                    f"data.{name} must be (min, max) with 0 < min <= max <= 1, got {scale!r}"
                )
            object.__setattr__(self, name, (float(scale[0]), float(scale[1])))
        if self.blur_kernel is not None:
            k = self.blur_kernel
            smallest = min(self.global_size, self.local_size)
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0 or k % 2 == 0:
                raise SelfPatchError(f"data.blur_kernel must be an odd positive integer, got {k!r}")
            if k // 2 >= smallest:
                raise SelfPatchError(
                    f"data.blur_kernel {k} is too large for {smallest} px crops: use at most "
                    f"{2 * smallest - 1}, or leave it unset to size it per crop"
                )

    @property
    def n_views(self) -> int:
        return 2 + self.n_local

    def kernel_for(self, crop_size: int) -> int:
        return self.blur_kernel if self.blur_kernel is not None else blur_kernel_size(crop_size)


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


def multicrop_config(data: Any) -> MultiCropConfig:
    """The :class:`MultiCropConfig` of a ``DataConfig`` (``cfg.data``); one-line errors."""
    return MultiCropConfig(
        global_size=data.global_size, global_scale=tuple(data.global_scale),
        local_size=data.local_size, local_scale=tuple(data.local_scale), n_local=data.n_local,
        color_jitter=tuple(data.color_jitter), color_jitter_p=data.color_jitter_p,
        grayscale_p=data.grayscale_p)


class MultiCropTransform:
    """Per-image multi-crop (CPU path): image -> ``[global1, global2, local1..n_local]``.

    Input: an RGB ``PIL.Image`` (what :class:`~selfpatch.data.folder.ImageFolderDataset`
    gives) or a uint8 tensor ``(3, H, W)``. Output: a list of ``2 + n_local`` float32 tensors,
    ``(3, G, G)`` twice then ``(3, L, L)``, normalised with the ImageNet mean and std.
    Randomness comes from torch's global generator (``torch.manual_seed`` makes it repeat).
    """

    def __init__(self, config: MultiCropConfig | None = None):
        self.config = config = config or MultiCropConfig()
        g, s = config.global_size, config.global_scale
        self.global1 = self._view(g, s, blur_p=GLOBAL_BLUR_P[0], solarize_p=0.0)
        self.global2 = self._view(g, s, blur_p=GLOBAL_BLUR_P[1], solarize_p=SOLARIZE_P)
        self.local = self._view(config.local_size, config.local_scale, LOCAL_BLUR_P, 0.0)

    def _view(
        self, size: int, scale: tuple[float, float], blur_p: float, solarize_p: float
    ) -> v2.Compose:
        steps = [
            # Crop, flip and colour on PIL images where PIL does them fastest (and as DINO did).
            v2.RandomResizedCrop(
                size, scale=scale, ratio=CROP_RATIO, interpolation=v2.InterpolationMode.BICUBIC
            ),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(*self.config.color_jitter)],
                           p=self.config.color_jitter_p),
            v2.RandomGrayscale(p=self.config.grayscale_p),
            v2.ToImage(),  # uint8 tensor from here on
            RandomGaussianBlur(self.config.kernel_for(size), BLUR_SIGMA, p=blur_p),
        ]
        if solarize_p > 0:
            steps.append(v2.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=solarize_p))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        return v2.Compose(steps)

    def __call__(self, image: Image.Image | Tensor) -> list[Tensor]:
        views = [self.global1(image), self.global2(image)]
        views += [self.local(image) for _ in range(self.config.n_local)]
        return [view.as_subclass(Tensor) for view in views]  # plain tensors, not tv_tensors

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def multicrop_collate(batch: list[tuple[list[Tensor], bool]]) -> tuple[list[Tensor], Tensor]:
    """Collate ``(views, ok)`` samples into ``(views, ok)`` for the batch.

    Returns a list of ``V = 2 + n_local`` tensors, view ``v`` stacked over the batch as
    ``(B, 3, S_v, S_v)``, and ``ok`` as a ``(B,)`` bool tensor (False: that sample's file was
    unreadable and a neighbour stood in; ``(~ok).sum()`` counts them across workers).
    """
    n_views = {len(views) for views, _ in batch}
    if len(n_views) != 1:
        raise ValueError(f"samples in one batch have different numbers of views: {n_views}")
    views = [torch.stack(per_view) for per_view in zip(*(v for v, _ in batch))]
    ok = torch.tensor([bool(flag) for _, flag in batch], dtype=torch.bool)
    return views, ok


# ---------------------------------------------------------------------------------------------
# Device-side path
# ---------------------------------------------------------------------------------------------


class PrepareForGpu:
    """Loader-side half of :class:`GpuMultiCrop`: RGB image -> ``((3, S, S) uint8, (2,) int64)``.

    The whole image is resized (bicubic, antialiased) to ``S x S``, ignoring its aspect; the
    second tensor keeps the original ``(H, W)`` so the device side can draw crop boxes in
    original pixels and undo the squeeze exactly. Fixed-size uint8 tensors collate and copy
    to the device cheaply (``3 S^2`` bytes per image).
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> tuple[Tensor, Tensor]:
        if isinstance(image, Tensor):
            h, w = image.shape[-2:]
            resized = tvf.resize(image, [self.size, self.size],
                                 interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        else:
            w, h = image.size
            resized = tvf.pil_to_tensor(
                image.resize((self.size, self.size), Image.Resampling.BICUBIC)
            )
        return resized, torch.tensor([h, w], dtype=torch.int64)


def gpu_multicrop_collate(
    batch: list[tuple[tuple[Tensor, Tensor], bool]],
) -> tuple[Tensor, Tensor, Tensor]:
    """Collate ``((image, hw), ok)`` samples -> images ``(B, 3, S, S)`` uint8, sizes ``(B, 2)``
    int64 (original ``H, W``), ok ``(B,)`` bool."""
    images = torch.stack([sample[0][0] for sample in batch])
    sizes = torch.stack([sample[0][1] for sample in batch])
    ok = torch.tensor([bool(sample[1]) for sample in batch], dtype=torch.bool)
    return images, sizes, ok


def sample_crop_boxes(
    sizes: Tensor, scale: tuple[float, float], ratio: tuple[float, float] = CROP_RATIO,
    attempts: int = 10,
) -> Tensor:
    """RandomResizedCrop boxes for a batch: sizes ``(N, 2)`` (H, W) -> ``(N, 4)`` float
    ``(top, left, height, width)`` in whole pixels.

    The same sampling as torchvision's RandomResizedCrop, vectorised: up to ``attempts``
    draws of (area fraction ~ U(scale), log aspect ~ U(log ratio)); the first that fits is
    kept, else the central crop clamped to the ratio range.
    """
    n, device = sizes.shape[0], sizes.device
    height, width = sizes[:, 0].double(), sizes[:, 1].double()
    area = (height * width)[:, None]
    target = area * torch.empty(n, attempts, device=device, dtype=torch.float64).uniform_(*scale)
    log_r = torch.empty(n, attempts, device=device, dtype=torch.float64)
    aspect = torch.exp(log_r.uniform_(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first True
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    top = torch.floor(torch.rand(n, device=device, dtype=torch.float64) * (height - h + 1))
    left = torch.floor(torch.rand(n, device=device, dtype=torch.float64) * (width - w + 1))
    # No draw fits (extreme aspect ratios): torchvision's central fallback.
    in_ratio = width / height
    fb_w = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    found = fits.any(dim=1)
    h, w = torch.where(found, h, fb_h), torch.where(found, w, fb_w)
    top = torch.where(found, top, torch.floor((height - fb_h) / 2))
    left = torch.where(found, left, torch.floor((width - fb_w) / 2))
    return torch.stack([top, left, h, w], dim=1).float()


def crop_resize(source: Tensor, sizes: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Crop each box, resize it to ``size x size`` (bicubic) and mirror it where ``flip``.

    Args:
        source: ``(B, C, S, S)`` float images, each the whole original image resized to
            ``S x S`` (any aspect; ``S`` may differ per axis).
        sizes: ``(B, 2)`` original ``(H, W)`` that ``boxes`` refer to.
        boxes: ``(B, 4)`` ``(top, left, height, width)`` in original pixels.
        flip: ``(B,)`` bool.

    Returns ``(B, C, size, size)``, clamped to [0, 1]. A box in normalised coordinates of the
    original equals the box in the resized copy (resizing the whole image keeps normalised
    coordinates), so one affine grid does crop, resize and flip (a negative x scale mirrors
    the box). Output pixel centres are placed as ``torch.nn.functional.interpolate`` places
    them, so with ``S = (H, W)`` this equals torchvision's ``resized_crop`` without
    antialiasing, except within 2 px of the box edges, where the cubic support reads the real
    pixels beyond the box instead of repeating the edge pixel.
    """
    b = source.shape[0]
    top, left, h, w = boxes.float().unbind(dim=1)
    height, width = sizes[:, 0].float(), sizes[:, 1].float()
    theta = torch.zeros(b, 2, 3, device=source.device)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) * w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = nnf.affine_grid(theta, [b, source.shape[1], size, size], align_corners=False)
    out = nnf.grid_sample(source, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)  # bicubic overshoots


def _grayscale(x: Tensor) -> Tensor:
    """``(N, 3, H, W)`` -> ``(N, 1, H, W)`` luma."""
    r, g, b = x.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b)[:, None]


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor[:, None, None, None]
    return (f * x + (1 - f) * other).clamp_(0.0, 1.0)


def _adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` (``(N,)``, in turns) via HSV, as torchvision's adjust_hue."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    sat = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        maxc == r, (g - b) / safe, torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe)
    )
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift[:, None, None], 1.0)
    # HSV -> RGB: channel n (5, 3, 1 for R, G, B) is V - V*S*clamp(min(k, 4 - k), 0, 1).
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + hue * 6, 6.0)
        out.append(maxc - maxc * sat * torch.clamp(torch.minimum(k, 4 - k), 0.0, 1.0))
    return torch.stack(out, dim=1)


def _jitter_op(x: Tensor, op: int, factor: Tensor) -> Tensor:
    if op == 0:  # brightness: blend with black
        return (x * factor[:, None, None, None]).clamp_(0.0, 1.0)
    if op == 1:  # contrast: blend with the mean luma of each image
        return _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)
    if op == 2:  # saturation: blend with the grey version
        return _blend(x, _grayscale(x), factor)
    return _adjust_hue(x, factor)


class GpuMultiCrop:
    """Device-side multi-crop: ``(images, sizes)`` batch -> ``[global1, global2, locals...]``.

    Args:
        config: crop sizes and scales (as :class:`MultiCropTransform`).
        source_size: side ``S`` of the fixed-size images the loader sends; default
            ``8/7 * global_size`` (256 for 224), so global crops are rarely upsampled much.

    Call with ``images`` ``(B, 3, S, S)`` uint8 and ``sizes`` ``(B, 2)`` on the device (as
    :func:`gpu_multicrop_collate` makes them, then ``.to(device, non_blocking=True)``).
    Returns ``2 + n_local`` float32 tensors, ``(B, 3, G, G)`` twice then ``(B, 3, L, L)``,
    on the images' device, normalised as the CPU path.

    Same distributions as :class:`MultiCropTransform`, per sample: crop boxes are drawn in
    original pixels (:func:`sample_crop_boxes`), flip, ColorJitter with its own random order
    of the four operations, grayscale, blur and solarize with the same probabilities and
    ranges. Differences, all small: the crop is resampled from the ``S x S`` copy (one
    bicubic ``grid_sample``, no antialiasing, so crops from a much larger area alias a little
    and small crops hold no more detail than ``S`` allows); colour runs in float instead of
    uint8 steps; solarize thresholds at 128/255 on floats.
    """

    def __init__(self, config: MultiCropConfig | None = None, source_size: int | None = None):
        self.config = config = config or MultiCropConfig()
        self.source_size = source_size or round(config.global_size * 8 / 7)
        if self.source_size <= 0:
            raise SelfPatchError(f"source_size must be positive, got {self.source_size}")

    def loader_transform(self) -> PrepareForGpu:
        """The transform to give the data set: decode + resize to ``S x S`` uint8."""
        return PrepareForGpu(self.source_size)

    @torch.no_grad()
    def __call__(self, images: Tensor, sizes: Tensor) -> list[Tensor]:
        cfg = self.config
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, S, S), got {tuple(images.shape)}")
        source = images.float().div_(255.0)
        sizes = sizes.to(images.device)
        views = [
            self._views(source, sizes, 1, cfg.global_size, cfg.global_scale,
                        GLOBAL_BLUR_P[0], 0.0),
            self._views(source, sizes, 1, cfg.global_size, cfg.global_scale,
                        GLOBAL_BLUR_P[1], SOLARIZE_P),
        ]
        if cfg.n_local:
            locals_ = self._views(source, sizes, cfg.n_local, cfg.local_size, cfg.local_scale,
                                  LOCAL_BLUR_P, 0.0)
            views += list(locals_.chunk(cfg.n_local, dim=0))
        return views

    def _views(
        self, source: Tensor, sizes: Tensor, copies: int, size: int,
        scale: tuple[float, float], blur_p: float, solarize_p: float,
    ) -> Tensor:
        """``copies`` views of every image, view-major: ``(copies * B, 3, size, size)``."""
        crops = torch.cat([self._crop(source, sizes, size, scale) for _ in range(copies)])
        x = self._colour(crops)
        n, device = x.shape[0], x.device
        blur = (torch.rand(n, device=device) < blur_p).nonzero()[:, 0]
        if blur.numel():
            sigma = torch.empty(blur.numel(), device=device).uniform_(*BLUR_SIGMA)
            x[blur] = gaussian_blur(x[blur], sigma, self.config.kernel_for(size))
        if solarize_p > 0:
            solarize = (torch.rand(n, device=device) < solarize_p)[:, None, None, None]
            x = torch.where(solarize & (x >= SOLARIZE_THRESHOLD / 255.0), 1.0 - x, x)
        mean = torch.tensor(IMAGENET_MEAN, device=device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=device)[None, :, None, None]
        return (x - mean) / std

    @staticmethod
    def _crop(source: Tensor, sizes: Tensor, size: int, scale: tuple[float, float]) -> Tensor:
        """Random resized crop + horizontal flip (p=0.5) of each image: ``(B, 3, size, size)``."""
        boxes = sample_crop_boxes(sizes, scale)
        flip = torch.rand(source.shape[0], device=source.device) < 0.5
        return crop_resize(source, sizes, boxes, flip, size)

    def _colour(self, x: Tensor) -> Tensor:
        """ColorJitter (p=0.8 by default, random order per sample) then grayscale (p=0.2)."""
        n, device = x.shape[0], x.device
        bright, contrast, saturation, hue = self.config.color_jitter
        # Factors as ColorJitter draws them (never below 0).
        factors = torch.stack([
            torch.empty(n, device=device).uniform_(max(0.0, 1 - bright), 1 + bright),
            torch.empty(n, device=device).uniform_(max(0.0, 1 - contrast), 1 + contrast),
            torch.empty(n, device=device).uniform_(max(0.0, 1 - saturation), 1 + saturation),
            torch.empty(n, device=device).uniform_(-hue, hue),
        ])
        jitter = torch.rand(n, device=device) < self.config.color_jitter_p
        order = torch.rand(n, 4, device=device).argsort(dim=1)  # a random permutation each
        for step in range(4):
            for op in range(4):
                # Only the samples doing ``op`` at this step: each op runs once per sample.
                idx = (jitter & (order[:, step] == op)).nonzero()[:, 0]
                if idx.numel():
                    x[idx] = _jitter_op(x[idx], op, factors[op, idx])
        gray = (torch.rand(n, device=device) < self.config.grayscale_p)[:, None, None, None]
        return torch.where(gray, _grayscale(x).expand_as(x), x)
