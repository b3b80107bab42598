"""``eval knn``: weighted k-nearest-neighbour classification on frozen image embeddings.

DINO's protocol (Wu et al. 2018 weighting): embeddings are L2-normalised; each validation image
takes its ``k`` most cosine-similar training images, and each neighbour votes for its class
with weight ``exp(cos / T)``; classes are ranked by summed weight (top-1 / top-5 accuracy).
Defaults k=20, T=0.07.

The image embedding is passed in by the caller; ``eval knn`` / ``eval all`` pass the method's
own image representation (``selfpatch.models.loading.load_image_embedder``: CLS token for
DINO, the aggregation module for SelfPatch, mean of the patch tokens for random / exported
backbones without [CLS]). Without one, the mean of the patch tokens is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.features import (
    extract_embeddings,
    mean_pooled_embedder,
    to_normalized_tensor,
)
from selfpatch.io import IMAGE_SUFFIXES, read_rgb


def list_image_folder(root: str | Path, split: str,
                      classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Files and class indices of ``<root>/<split>/<class>/*`` (torchvision ImageFolder layout).

    Args:
        root: folder holding ``train/`` and ``val/``.
        split: sub-folder to read.
        classes: class names from the training split; ``None`` derives them (sorted).
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise SelfPatchError(f"{folder} does not exist; --knn-root must hold train/<class>/ and "
                             "val/<class>/ image folders")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes is None:
        classes = found
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    for name in found:
        if name not in index:
            raise SelfPatchError(f"class folder {folder / name} does not exist in the training "
                                 "split; every val class needs training images")
        for p in sorted((folder / name).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(index[name])
    if not paths:
        raise SelfPatchError(f"{folder} holds no images in class sub-folders; add them")
    return paths, labels, list(classes)


def knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor,
               test_features: torch.Tensor, num_classes: int, k: int = 20,
               temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class scores ``(Q, C)`` of weighted k-NN voting.

    Args:
        train_features: ``(M, D)`` training embeddings (normalised here).
        train_labels: ``(M,)`` int class ids.
        test_features: ``(Q, D)`` query embeddings (normalised here).
        num_classes: C.
        k: neighbours per query (capped at M).
        temperature: votes weigh ``exp(cos / temperature)``.
    """
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k = min(k, train.shape[0])
    out = []
    for start in range(0, test.shape[0], chunk):
        sim = test[start : start + chunk] @ train.T  # (q, M)
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(top.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[idx], (top / temperature).exp())
        out.append(votes)
    return torch.cat(out)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent (top-5 becomes top-C when C < 5)."""
    k5 = min(5, scores.shape[1])
    ranked = scores.topk(k5, dim=1).indices
    hits = ranked == labels[:, None]
    return float(100 * hits[:, 0].float().mean()), float(100 * hits.any(1).float().mean())


Embedder = Callable[[torch.Tensor], torch.Tensor]


def _images(paths: list[Path], size: int, resize: int | None) -> Iterator[torch.Tensor]:
    for p in paths:
        img = read_rgb(p)
        if resize:
            # DINO's ImageNet evaluation: resize the short side, then centre-crop.
            scale = resize / min(img.height, img.width)
            img = img.resize((max(size, round(img.width * scale)),
                              max(size, round(img.height * scale))), Image.BICUBIC)
            left, top = (img.width - size) // 2, (img.height - size) // 2
            img = img.crop((left, top, left + size, top + size))
        yield to_normalized_tensor(img, (size, size))


def evaluate_knn(backbone: torch.nn.Module, root: str | Path, k: int = 20,
                 temperature: float = 0.07, image_size: int | None = None,
                 center_crop: bool = False, device: torch.device | str = "cpu",
                 batch_size: int = 64, embed: Embedder | None = None,
                 embed_name: str | None = None, log=print) -> dict:
    """Embed ``train`` and ``val`` of an ImageFolder root and score weighted k-NN.

    Args:
        backbone: frozen backbone (used for the patch size and the default embedding).
        root: folder with ``train/<class>/`` and ``val/<class>/``.
        k, temperature: voting settings.
        image_size: side fed to the network; None = the first training image's short side,
            floored to the patch size.
        center_crop: resize the short side to ``image_size * 256 / 224`` and centre-crop
            (DINO's ImageNet setting) instead of resizing straight to the square.
        embed: the ``(B, 3, H, W) -> (B, D)`` image embedding, e.g. the method's own image
            representation (``models.loading.load_image_embedder``); default: the mean of
            the backbone's patch tokens.
        embed_name: how the report names ``embed`` (default "explicit embedder").

    Returns:
        ``{"top1", "top5" (percent), "settings": {...}, ...}``.
    """
    start = time.perf_counter()
    train_paths, train_labels, classes = list_image_folder(root, "train")
    val_paths, val_labels, _ = list_image_folder(root, "val", classes)
    patch = backbone.patch_size
    if image_size is None:
        img = read_rgb(train_paths[0])
        side = min(img.height, img.width)
        image_size = max(patch, side - side % patch)
    if image_size % patch:
        raise SelfPatchError(f"--image-size {image_size} is not a multiple of the patch size "
                             f"{patch}; choose a multiple")
    if embed is None:
        embed, kind = mean_pooled_embedder(backbone), "mean-pooled patch tokens"
    else:
        kind = embed_name or "explicit embedder"
    resize = round(image_size * 256 / 224) if center_crop else None
    train_f = extract_embeddings(embed, _images(train_paths, image_size, resize), batch_size,
                                 device)
    val_f = extract_embeddings(embed, _images(val_paths, image_size, resize), batch_size, device)
    scores = knn_scores(train_f, torch.tensor(train_labels), val_f, len(classes), k, temperature)
    top1, top5 = topk_accuracy(scores, torch.tensor(val_labels))
    if log:
        log(f"knn: {len(train_paths)} train / {len(val_paths)} val images: "
            f"top-1 {top1:.2f} top-5 {top5:.2f}")
    return {
        "top1": top1,
        "top5": top5,
        "settings": {"k": k, "temperature": temperature, "image_size": image_size,
                     "center_crop": center_crop, "embedding": kind, "root": str(root),
                     "normalisation": "L2", "weighting": "exp(cos / T)"},
        "num_train": len(train_paths),
        "num_val": len(val_paths),
        "num_classes": len(classes),
        "seconds": time.perf_counter() - start,
    }
