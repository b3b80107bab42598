"""Device-side multi-crop: the loader decodes and resizes, one batched call makes the views.

Same distributions as :class:`~selfpatch.data.transforms.multicrop.MultiCropTransform`, with
per-sample random parameters, for runs whose loader cannot keep up with the accelerator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

from selfpatch.data.transforms.blur import BLUR_SIGMA, gaussian_blur
from selfpatch.data.transforms.multicrop import (
    _LUMA,
    CROP_RATIO,
    GLOBAL_BLUR_P,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LOCAL_BLUR_P,
    SOLARIZE_P,
    SOLARIZE_THRESHOLD,
    MultiCropConfig,
)
from selfpatch.errors import SelfPatchError

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
