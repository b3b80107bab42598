"""Config -> objects: the only place that reads a :class:`~selfpatch.config.Config` to build
components (backbone, objectives, the teacher-student pair, multi-crop transforms, the data
loader, the schedules). Components below take plain arguments and validate them themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from selfpatch.config import Config, DataConfig
from selfpatch.data.folder import ImageFolderDataset
from selfpatch.data.seeded import SeededViews
from selfpatch.data.transforms import (
    GpuMultiCrop,
    MultiCropConfig,
    MultiCropTransform,
    gpu_multicrop_collate,
    multicrop_collate,
)
from selfpatch.errors import SelfPatchError
from selfpatch.methods.dino import DINOObjective
from selfpatch.methods.moby import MoBYObjective
from selfpatch.methods.moco import MoCoV3Objective
from selfpatch.methods.objective import ImageObjective
from selfpatch.methods.selfpatch import SelfPatchObjective
from selfpatch.methods.teacher_student import TeacherStudent
from selfpatch.models.backbone import ViTBackbone, build_backbone_from_spec, make_backbone_spec
from selfpatch.train import distributed as D
from selfpatch.train.sampler import EpochSampler
from selfpatch.train.schedules import cosine_schedule, teacher_temperature_schedule


# ----------------------------------------------------------------------------- model
def build_backbone(cfg: Config) -> ViTBackbone:
    """The student backbone named by ``cfg.model`` (DINO keeps a [CLS] token, SelfPatch not,
    unless ``selfpatch.image_representation=cls``).

    ``model.fidelity=reference``: DINO's position-embedding resizing and, for SelfPatch, no
    final LayerNorm (the authors' ViT).
    """
    reference = cfg.model.fidelity == "reference"
    # The authors' SelfPatch ViT has no final LayerNorm (their DINO baseline's ViT has one).
    spec = make_backbone_spec(cfg.model.arch, cfg.model.patch_size, cfg.data.global_size,
                              class_token=not cfg.uses_selfpatch
                              or cfg.selfpatch.image_representation == "cls",
                              final_norm=not (reference and cfg.uses_selfpatch),
                              pos_resize="reference" if reference else "timm")
    return build_backbone_from_spec(spec, drop_path_rate=cfg.model.drop_path)


def _dino(cfg: Config) -> DINOObjective:
    d = cfg.dino
    return DINOObjective(
        out_dim=d.out_dim, hidden_dim=d.hidden_dim, bottleneck_dim=d.bottleneck_dim,
        norm_last_layer=d.norm_last_layer, student_temp=d.student_temp,
        center_momentum=d.center_momentum, head_bn=d.head_bn, l2_eps=_l2_eps(cfg))


def _mocov3(cfg: Config) -> MoCoV3Objective:
    m = cfg.moco
    return MoCoV3Objective(dim=m.dim, hidden_dim=m.hidden_dim,
                           pred_hidden_dim=m.pred_hidden_dim, temperature=m.temperature)


def _moby(cfg: Config) -> MoBYObjective:
    m = cfg.moby
    return MoBYObjective(dim=m.dim, hidden_dim=m.hidden_dim, queue_size=m.queue_size,
                         temperature=m.temperature)


# Image-level objectives by the name before "+selfpatch" in `method`: builder from the config
# and the teacher's EMA momentum schedule (start, end; cosine). Adding one: an
# ImageObjective subclass (methods/objective.py), a builder and a config section here.
IMAGE_OBJECTIVES: dict[str, tuple[Callable[[Config], ImageObjective],
                                  Callable[[Config], tuple[float, float]]]] = {
    "dino": (_dino, lambda cfg: (cfg.dino.momentum_teacher, cfg.dino.momentum_teacher_end)),
    "mocov3": (_mocov3, lambda cfg: (cfg.moco.momentum, 1.0)),
    "moby": (_moby, lambda cfg: (cfg.moby.momentum, 1.0)),
}


def build_image_objective(cfg: Config) -> ImageObjective:
    """The image-level objective named by ``cfg.method`` (``dino``, ``mocov3``, ``moby``)."""
    if cfg.image_objective not in IMAGE_OBJECTIVES:
        raise SelfPatchError(f"method={cfg.method!r}: unknown image objective "
                             f"{cfg.image_objective!r}; one of {sorted(IMAGE_OBJECTIVES)}")
    return IMAGE_OBJECTIVES[cfg.image_objective][0](cfg)


def _l2_eps(cfg: Config) -> float:
    """The heads' L2-normalisation eps: 1e-12 in the reference code (torch's default)."""
    return 1e-12 if cfg.model.fidelity == "reference" else 1e-6


def build_selfpatch_objective(cfg: Config) -> SelfPatchObjective | None:
    """``cfg.selfpatch`` as a :class:`SelfPatchObjective`, or ``None`` without SelfPatch.

    The patch head's MLP widths, last-layer normalisation and student temperature are the
    image head's (``dino.hidden_dim``, ``dino.bottleneck_dim``, ``dino.norm_last_layer``,
    ``dino.student_temp``, ``dino.head_bn``), as in the authors' code; only its output size is
    its own, and its teacher temperature when ``selfpatch.teacher_temp`` > 0.
    """
    if not cfg.uses_selfpatch:
        return None
    sp, d = cfg.selfpatch, cfg.dino
    return SelfPatchObjective(
        neighbourhood=sp.neighbourhood, border=sp.border, k=sp.k, aggregation=sp.aggregation,
        aggregation_depth=sp.aggregation_depth, out_dim=sp.out_dim, hidden_dim=d.hidden_dim,
        bottleneck_dim=d.bottleneck_dim, norm_last_layer=d.norm_last_layer,
        student_temp=d.student_temp, teacher_temp=sp.teacher_temp,
        center_momentum=sp.center_momentum, loss_weight=sp.loss_weight,
        local_crops=sp.local_crops, head_bn=d.head_bn,
        l2_eps=_l2_eps(cfg),
        route_patches_through_h_norm=cfg.model.fidelity == "reference",
        negatives=sp.negatives, negative_temperature=sp.negative_temperature,
        image_representation=sp.image_representation)


def build_teacher_student(cfg: Config, backbone: torch.nn.Module | None = None) -> TeacherStudent:
    """The training module of ``cfg``; ``backbone`` replaces the one ``cfg.model`` names.

    Creation order (backbone, then h, g', g) is what fixes the initial weights for a seed.
    """
    backbone = backbone if backbone is not None else build_backbone(cfg)
    selfpatch = build_selfpatch_objective(cfg)
    _check_patch_grids(cfg, selfpatch)
    return TeacherStudent(backbone, build_image_objective(cfg), selfpatch,
                          center_views=cfg.dino.center_views)


def check_buildable(cfg: Config) -> None:
    """Build the parts of ``cfg`` that can fail on a bad value (no model weights): the
    multi-crop settings, crop sizes against a Swin's stride, and the SelfPatch neighbourhood
    on each crop's patch grid."""
    multicrop_config(cfg.data)
    stride = _token_stride(cfg)
    if stride and cfg.model.arch.startswith("swin"):
        for key, size in (("data.global_size", cfg.data.global_size),
                          ("data.local_size", cfg.data.local_size if cfg.data.n_local else 0)):
            if size % stride:
                raise SelfPatchError(f"config key {key}: {size} is not a multiple of "
                                     f"{stride}, the token stride of {cfg.model.arch}")
    _check_patch_grids(cfg, build_selfpatch_objective(cfg))


def _token_stride(cfg: Config) -> int:
    """Pixels per token of the backbone, when known from the config alone (0 otherwise):
    ``model.patch_size`` for a ViT, 32 for a Swin (its last stage)."""
    return 32 if cfg.model.arch.startswith("swin") else cfg.model.patch_size


def _check_patch_grids(cfg: Config, selfpatch: SelfPatchObjective | None) -> None:
    """SelfPatch's neighbourhood must fit the patch grid of every crop with a patch loss."""
    p = _token_stride(cfg)
    if selfpatch is None or not p:
        return
    sizes = [cfg.data.global_size] + (
        [cfg.data.local_size] if cfg.data.n_local and cfg.selfpatch.local_crops else [])
    selfpatch.check_grids([(s // p, s // p) for s in sizes])


# ----------------------------------------------------------------------------- data
def multicrop_config(data: DataConfig) -> MultiCropConfig:
    """The :class:`MultiCropConfig` of ``cfg.data``; one-line errors for bad values."""
    return MultiCropConfig(
        global_size=data.global_size, global_scale=tuple(data.global_scale),
        local_size=data.local_size, local_scale=tuple(data.local_scale), n_local=data.n_local,
        color_jitter=tuple(data.color_jitter), color_jitter_p=data.color_jitter_p,
        grayscale_p=data.grayscale_p)


def resolve_data_root(cfg: Config, info: D.DistInfo) -> Path:
    """The image folder; ``builtin`` builds/reuses the built-in data (rank 0 first) and
    returns its scenes, or with ``data.builtin_images=objects`` its single-object images
    (the k-NN renderer's ``train`` split, one folder per class)."""
    if cfg.data.path != "builtin":
        return Path(cfg.data.path).expanduser()
    from selfpatch.data.builtin import BuiltinSpec, ensure_builtin

    objects = cfg.data.builtin_images == "objects"
    sizes = {"n_pretrain": cfg.data.builtin_n_pretrain}
    if objects:
        sizes["n_knn_train"] = cfg.data.builtin_n_objects
    spec = BuiltinSpec.for_version(cfg.data.builtin_version, **sizes)

    def folder(progress: bool) -> Path:
        data = ensure_builtin(spec, progress=progress)
        return Path(data.knn_root) / "train" if objects else data.pretrain_dir

    if info.is_main:
        root = folder(cfg.run.progress)
    D.barrier(info)
    if not info.is_main:
        root = folder(False)
    return root


def keep_folders(files: list[Path], root: Path, folders: list[str]) -> list[Path]:
    """The ``files`` (below ``root``) whose top-level folder is one of ``folders``, in order.

    Raises:
        SelfPatchError: a name in ``folders`` is not a top-level folder holding images.
    """
    present = sorted({top_folder(f, root) for f in files} - {"."})
    missing = [name for name in folders if name not in present]
    if missing:
        shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "")
        raise SelfPatchError(f"data.folders: {', '.join(missing)} not found under {root}; "
                             f"folders with images there: {shown or 'none'}")
    wanted = set(folders)
    return [f for f in files if top_folder(f, root) in wanted]


@dataclass
class TrainData:
    """What the loop needs from the data side: the loader, its resumable sampler, the
    dataset (for counts) and, with ``data.gpu_augment``, the device-side view maker."""

    loader: DataLoader
    sampler: EpochSampler
    dataset: ImageFolderDataset
    gpu_augment: GpuMultiCrop | None


def top_folder(file: Path, root: Path) -> str:
    """The top-level folder of ``file`` below ``root`` (``"."`` for a file directly in it)."""
    parts = file.relative_to(root).parts
    return parts[0] if len(parts) > 1 else "."


def folders_left_out(files: list[Path], limit: int, root: Path) -> str:
    """A warning when ``data.limit_images`` (the first ``limit`` of the sorted ``files``)
    leaves out whole top-level folders of ``root``, e.g. all images of some classes in an
    ImageFolder layout; ``""`` when every folder keeps at least one image."""
    kept = {top_folder(f, root) for f in files[:limit]}
    left_out = sorted({top_folder(f, root) for f in files[limit:]} - kept)
    if not left_out:
        return ""
    shown = ", ".join(left_out[:5]) + (", ..." if len(left_out) > 5 else "")
    return (f"warning: data.limit_images={limit} keeps the first {limit} of {len(files)} images "
            f"in sorted order, so {len(left_out)} of {len(kept) + len(left_out)} folders of "
            f"{root} are left out entirely ({shown}); set data.limit_images=0 to use them all")


def build_train_data(cfg: Config, info: D.DistInfo, device: torch.device) -> TrainData:
    """Multi-crop DataLoader over the image folder, with a seeded, resumable sampler.

    Batches are ``(views, ok)`` (V tensors ``(B, 3, S_v, S_v)``, ``(B,)`` bool), or with
    ``data.gpu_augment`` ``(images (B, 3, S, S) uint8, sizes (B, 2), ok (B,))`` for
    :func:`selfpatch.train.trainer.device_views`.
    """
    root = resolve_data_root(cfg, info)
    dataset = ImageFolderDataset(root)
    if cfg.data.folders:
        dataset.files = keep_folders(dataset.files, dataset.root, cfg.data.folders)
    if cfg.data.limit_images:
        dropped = folders_left_out(dataset.files, cfg.data.limit_images, dataset.root)
        dataset.files = dataset.files[: cfg.data.limit_images]
        if dropped and info.is_main:
            print(dropped)
    report = dataset.scan(verify=True)
    if report.bad and info.is_main:
        print(report.summary())
    d = cfg.data
    gpu_augment = None
    if d.gpu_augment:  # workers only decode + resize; the views are made on the device
        gpu_augment = GpuMultiCrop(multicrop_config(d))
        transform, collate = gpu_augment.loader_transform(), gpu_multicrop_collate
    else:
        transform, collate = MultiCropTransform(multicrop_config(d)), multicrop_collate
    sampler = EpochSampler(len(dataset), cfg.optim.batch_size, cfg.run.seed, info.rank,
                           info.world_size)
    if sampler.batches_per_epoch == 0:
        raise SelfPatchError(
            f"data.path={root} has {len(dataset)} readable images, fewer than one batch of "
            f"{cfg.optim.batch_size} x {info.world_size} process(es); lower optim.batch_size")
    loader = DataLoader(
        SeededViews(dataset, transform, cfg.run.seed), batch_size=cfg.optim.batch_size,
        sampler=sampler, num_workers=d.num_workers, collate_fn=collate,
        pin_memory=d.pin_memory and device.type == "cuda",
        persistent_workers=False, prefetch_factor=4 if d.num_workers else None,
        # Its own generator: creating an epoch's iterator must not draw from the global RNG,
        # or a run resumed mid-epoch would see a shifted drop-path stream.
        generator=torch.Generator().manual_seed(cfg.run.seed))
    return TrainData(loader, sampler, dataset, gpu_augment)


# ----------------------------------------------------------------------------- schedules
@dataclass
class Schedules:
    """Per-iteration lr, weight decay and teacher momentum; per-epoch teacher temperature."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    peak_lr: float


def build_schedules(cfg: Config, iters_per_epoch: int, world_size: int) -> Schedules:
    """DINO's schedules; the peak lr is ``optim.base_lr * total batch / 256`` (linear rule)."""
    o = cfg.optim
    lr = o.base_lr * o.batch_size * world_size / 256.0
    return Schedules(
        lr=cosine_schedule(lr, o.min_lr, o.epochs, iters_per_epoch, o.warmup_epochs,
                           warmup_endpoint=cfg.model.fidelity == "reference"),
        weight_decay=cosine_schedule(o.weight_decay, o.weight_decay_end, o.epochs,
                                     iters_per_epoch),
        momentum=cosine_schedule(*IMAGE_OBJECTIVES[cfg.image_objective][1](cfg), o.epochs,
                                 iters_per_epoch),
        teacher_temp=teacher_temperature_schedule(
            cfg.dino.warmup_teacher_temp, cfg.dino.teacher_temp,
            cfg.dino.warmup_teacher_temp_epochs, o.epochs),
        peak_lr=lr)
