"""Batched, gradient-free feature extraction from a frozen backbone.

Every dense evaluation needs the same thing: images normalised like ImageNet, pushed through
the frozen ViT in batches, and the patch tokens laid back on their ``(h, w)`` grid. This module
is that one piece; the protocols only decide which images go in and what to do with the
``(M, h, w, D)`` result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from selfpatch.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from selfpatch.errors import SelfPatchError

_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)


def to_normalized_tensor(img: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """PIL RGB image -> ImageNet-normalised ``(3, H, W)`` float tensor.

    Args:
        img: RGB image.
        size: optional ``(H, W)`` to resize to first (bilinear, aspect not preserved).
    """
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    # In numpy, once per image: the same float32 operations as torch's, without the cost of
    # launching small multi-threaded torch kernels for every image (2x faster on 2 cores).
    arr = np.asarray(img, dtype=np.float32) / np.float32(255)
    arr = (arr - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _batches(items: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    buf: list[torch.Tensor] = []
    for item in items:
        buf.append(item)
        if len(buf) == batch_size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)


@torch.no_grad()
def extract_patch_features(
    backbone: torch.nn.Module,
    images: Iterable[torch.Tensor],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Patch tokens of every image on its grid.

    Args:
        backbone: a :class:`~selfpatch.models.backbone.ViTBackbone` (``forward`` gives
            ``(B, N, D)`` patch tokens after the final norm, row-major grid).
        images: normalised ``(3, H, W)`` tensors, all the same size (a list or a lazy
            generator; only ``batch_size`` of them are held at once).
        batch_size: images per forward pass.
        device: where the backbone runs; the result is returned on the CPU.
        dtype: storage type of the result (``float16`` halves the cache of large sets).

    Returns:
        ``(M, h, w, D)`` features, ``h = H / patch``, ``w = W / patch``.
    """
    if batch_size < 1:
        raise SelfPatchError(f"--batch-size must be at least 1, got {batch_size}")
    out: list[torch.Tensor] = []
    for batch in _batches(images, batch_size):
        h, w = backbone.grid_shape(batch.shape[-2], batch.shape[-1])
        tokens = backbone(batch.to(device))
        out.append(tokens.reshape(tokens.shape[0], h, w, tokens.shape[-1]).to("cpu", dtype))
    if not out:
        raise SelfPatchError("no images to extract features from; the data folder is empty")
    return torch.cat(out)


def mean_pooled_embedder(backbone: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Image embedding ``(B, 3, H, W) -> (B, D)``: the average of the patch tokens."""

    def embed(images: torch.Tensor) -> torch.Tensor:
        return backbone(images).mean(dim=1)

    return embed


@torch.no_grad()
def extract_embeddings(
    embed: Callable[[torch.Tensor], torch.Tensor],
    images: Iterable[torch.Tensor],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Image embeddings ``(M, D)`` of normalised ``(3, H, W)`` images, computed in batches."""
    if batch_size < 1:
        raise SelfPatchError(f"--batch-size must be at least 1, got {batch_size}")
    out = [embed(batch.to(device)).float().cpu() for batch in _batches(images, batch_size)]
    if not out:
        raise SelfPatchError("no images to embed; the data folder is empty")
    return torch.cat(out)
