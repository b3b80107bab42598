"""Multi-crop settings (DINO's augmentations) and the per-image CPU path.

:class:`MultiCropConfig` holds what both paths share; :class:`MultiCropTransform` makes the
views of one image inside the DataLoader workers; :func:`multicrop_collate` batches them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from selfpatch.data.transforms.blur import BLUR_SIGMA, RandomGaussianBlur, blur_kernel_size
from selfpatch.errors import SelfPatchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
