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

Modules: :mod:`.multicrop` (settings, CPU path), :mod:`.gpu` (device path), :mod:`.blur`
(the Gaussian blur both use).
"""

from selfpatch.data.transforms.blur import (
    BLUR_SIGMA,
    RandomGaussianBlur,
    blur_kernel_size,
    gaussian_blur,
)
from selfpatch.data.transforms.gpu import (
    GpuMultiCrop,
    PrepareForGpu,
    crop_resize,
    gpu_multicrop_collate,
    sample_crop_boxes,
)
from selfpatch.data.transforms.multicrop import (
    CROP_RATIO,
    GLOBAL_BLUR_P,
    GRAYSCALE_P,
    IMAGENET_MEAN,
    IMAGENET_STD,
    JITTER,
    JITTER_P,
    LOCAL_BLUR_P,
    SOLARIZE_P,
    SOLARIZE_THRESHOLD,
    MultiCropConfig,
    MultiCropTransform,
    multicrop_collate,
)

__all__ = [
    "BLUR_SIGMA", "CROP_RATIO", "GLOBAL_BLUR_P", "GRAYSCALE_P", "IMAGENET_MEAN", "IMAGENET_STD",
    "JITTER", "JITTER_P", "LOCAL_BLUR_P", "SOLARIZE_P", "SOLARIZE_THRESHOLD", "GpuMultiCrop",
    "MultiCropConfig", "MultiCropTransform", "PrepareForGpu", "RandomGaussianBlur",
    "blur_kernel_size", "crop_resize", "gaussian_blur", "gpu_multicrop_collate",
    "multicrop_collate", "sample_crop_boxes",
]
