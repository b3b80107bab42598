"""The pre-training loop: one function, ``pretrain(cfg)``, for CPU, one GPU or torchrun/DDP.

Read top to bottom: set-up (process group, run directory, data, model, optimiser, schedules),
optional resume, then the epoch loop. Inside a step nothing waits on the host except at the
logging interval (``run.log_every``), where losses are read, a non-finite loss stops the run
(the last checkpoint stays the last *good* one) and a metrics line is written.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from selfpatch import runtime
from selfpatch.config import Config
from selfpatch.data.folder import ImageFolderDataset
from selfpatch.data.seeded import SeededViews, collate_views, sample_seed
from selfpatch.data.transforms import (
    GpuMultiCrop,
    MultiCropTransform,
    gpu_multicrop_collate,
    multicrop_config,
)
from selfpatch.errors import SelfPatchError
from selfpatch.methods.teacher_student import TeacherStudent
from selfpatch.models.loading import (
    CHECKPOINT_FORMAT,
    backbone_state_from_checkpoint,
    load_backbone_state,
    load_training_checkpoint,
)
from selfpatch.train import distributed as D
from selfpatch.train.checkpoint import atomic_save, rng_state, set_rng_state
from selfpatch.train.optim import build_optimizer, clip_gradients_per_parameter
from selfpatch.train.run_dir import MetricsLogger, environment, write_yaml
from selfpatch.train.sampler import EpochSampler
from selfpatch.train.schedules import cosine_schedule, teacher_temperature_schedule


def run_directory(cfg: Config) -> Path:
    """``run.output_dir`` with ``{name}`` filled from ``run.name`` (``{preset}``, ``{method}``)."""
    name = cfg.run.name.format(preset=cfg.preset or "custom",
                               method=cfg.method.replace("+", "-"))
    return Path(cfg.run.output_dir.format(name=name))


def resolve_data_root(cfg: Config, info: D.DistInfo) -> Path:
    """The image folder; ``builtin`` builds/reuses the built-in scenes (rank 0 first)."""
    if cfg.data.path != "builtin":
        return Path(cfg.data.path).expanduser()
    from selfpatch.data.builtin import BuiltinSpec, ensure_builtin

    spec = BuiltinSpec.for_version(cfg.data.builtin_version,
                                   n_pretrain=cfg.data.builtin_n_pretrain)
    if info.is_main:
        root = ensure_builtin(spec, progress=cfg.run.progress).pretrain_dir
    D.barrier(info)
    if not info.is_main:
        root = ensure_builtin(spec, progress=False).pretrain_dir
    return root


def build_loader(cfg: Config, info: D.DistInfo, device: torch.device
                 ) -> tuple[DataLoader, EpochSampler, ImageFolderDataset]:
    """Multi-crop DataLoader over the image folder, with a seeded, resumable sampler.

    Batches are ``(views, ok)`` (V tensors ``(B, 3, S_v, S_v)``, ``(B,)`` bool), or with
    ``data.gpu_augment`` ``(images (B, 3, S, S) uint8, sizes (B, 2), ok (B,))`` for
    :func:`device_views`.
    """
    root = resolve_data_root(cfg, info)
    dataset = ImageFolderDataset(root)
    if cfg.data.limit_images:
        dataset.files = dataset.files[: cfg.data.limit_images]
    report = dataset.scan(verify=True)
    if report.bad and info.is_main:
        print(report.summary())
    d = cfg.data
    if d.gpu_augment:  # workers only decode + resize; the views are made on the device
        transform, collate = GpuMultiCrop(multicrop_config(cfg.data)).loader_transform(), \
            gpu_multicrop_collate
    else:
        transform, collate = MultiCropTransform(multicrop_config(cfg.data)), collate_views
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
    return loader, sampler, dataset


def augment_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the device-side augmentation of global step ``step`` on ``rank``."""
    return sample_seed(seed, step, rank) ^ 0x2545F4914F6CDD1D  # apart from per-sample seeds


def device_views(augment: GpuMultiCrop, images: torch.Tensor, sizes: torch.Tensor,
                 seed: int) -> list[torch.Tensor]:
    """``GpuMultiCrop`` views of a ``(B, 3, S, S)`` uint8 batch, drawn under a forked RNG.

    Seeding by (run seed, step, rank) makes a resumed run draw the same views, and forking
    leaves the global stream (drop-path) exactly as without device-side augmentation. The
    views depend on the batch as a whole, so unlike the loader path they change with the
    per-rank batch size and the number of processes.
    """
    device = images.device
    cuda = ([device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda" else [])
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return augment(images, sizes)


def init_from(model: TeacherStudent, source: str) -> None:
    """Start student and teacher backbones from a run dir / checkpoint / export."""
    from selfpatch.models.loading import load_backbone

    if source.endswith(".safetensors"):
        state = load_backbone(source).vit.state_dict()
    else:
        state = backbone_state_from_checkpoint(load_training_checkpoint(source))
    load_backbone_state(model.student.backbone.vit, state, source)
    model.teacher.backbone.vit.load_state_dict(state)


def _gather_rng(info: D.DistInfo) -> list:
    state = rng_state()
    if not info.enabled:
        return [state]
    states: list = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


def save_checkpoint(path: Path, cfg: Config, model: TeacherStudent, optimizer, scaler,
                    step: int, epoch: int, info: D.DistInfo) -> None:
    """Everything needed to continue exactly; only rank 0 writes (atomically)."""
    rng = _gather_rng(info)
    if not info.is_main:
        return
    atomic_save({
        "format": CHECKPOINT_FORMAT, "version": 1, "config": cfg.to_dict(),
        "backbone_spec": model.student.backbone.spec.to_dict(), "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
        "epoch": epoch, "world_size": info.world_size, "rng": rng,
    }, path)


def pretrain(cfg: Config, resume: bool = False) -> Path:
    """Train ``cfg`` to completion (or ``optim.max_steps``); return the run directory."""
    info = D.init_distributed(cfg.run.device)
    try:
        return _pretrain(cfg, resume, info)
    finally:
        D.cleanup()


def _pretrain(cfg: Config, resume: bool, info: D.DistInfo) -> Path:
    device = D.resolve_device(cfg.run.device, info)
    threads, threads_reason = runtime.apply_threads(cfg.run.threads)
    seed = cfg.run.seed + info.rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    run_dir = run_directory(cfg)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if ckpt_path.exists() and not resume:
        raise SelfPatchError(f"{run_dir} already holds a run; pass --resume to continue it or "
                             "choose another run.name / run.output_dir")
    if resume and not ckpt_path.exists():
        raise SelfPatchError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")

    loader, sampler, dataset = build_loader(cfg, info, device)
    model = TeacherStudent(cfg).to(device)
    if cfg.model.init_from and not resume:
        init_from(model, cfg.model.init_from)
    if info.enabled:
        D.broadcast_module(model)  # teacher and centres too, not only DDP's student
    if cfg.run.compile:
        model.student.backbone.compile()
        model.teacher.backbone.compile()
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        unused = model.use_selfpatch and cfg.selfpatch.loss_weight == 0
        model.set_student_runner(DDP(model.student, device_ids=[device.index]
                                     if device.type == "cuda" else None,
                                     find_unused_parameters=unused))
    # Rank 0 decides (and, on a CPU, measures) alone; every rank then runs the same precision.
    precision = (runtime.resolve_precision(cfg.run.precision, device,
                                           model.student.backbone.embed_dim)
                 if info.is_main else None)
    if info.enabled:
        box = [precision]
        dist.broadcast_object_list(box, src=0)
        precision = box[0]
    if info.is_main:
        print(f"selfpatch: {precision.describe()}; {threads} CPU threads ({threads_reason})",
              flush=True)
    optimizer = build_optimizer(model.student, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.name == "fp16")
    student_params = [p for p in model.student.parameters() if p.requires_grad]
    last_layer = model.last_layer_parameters()

    o = cfg.optim
    iters = sampler.batches_per_epoch
    total = o.epochs * iters
    lr = o.base_lr * o.batch_size * info.world_size / 256.0
    lr_s = cosine_schedule(lr, o.min_lr, o.epochs, iters, o.warmup_epochs)
    wd_s = cosine_schedule(o.weight_decay, o.weight_decay_end, o.epochs, iters)
    mom_s = cosine_schedule(cfg.dino.momentum_teacher, cfg.dino.momentum_teacher_end,
                            o.epochs, iters)
    temp_s = teacher_temperature_schedule(cfg.dino.warmup_teacher_temp, cfg.dino.teacher_temp,
                                          cfg.dino.warmup_teacher_temp_epochs, o.epochs)

    step = 0
    if resume:
        ckpt = load_training_checkpoint(ckpt_path)
        if ckpt.get("world_size", 1) != info.world_size:
            raise SelfPatchError(
                f"{ckpt_path} was written by {ckpt['world_size']} process(es); resume it with "
                "the same number of processes (the sample order depends on it)")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        step = int(ckpt["step"])
        set_rng_state(ckpt["rng"][info.rank])

    logger = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(run_dir / "config.yaml", cfg.to_dict())
        env = environment(device, info.world_size)
        env.update(precision=precision.to_dict(), cpu=runtime.cpu_name(),
                   cpu_bf16_native=runtime.cpu_bf16_native(), threads_reason=threads_reason,
                   n_images=len(dataset), unreadable_images=len(dataset.bad_files),
                   iters_per_epoch=iters, total_steps=total, lr=lr,
                   total_batch=o.batch_size * info.world_size)
        (run_dir / "environment.json").write_text(json.dumps(env, indent=2))
        logger = MetricsLogger(run_dir, cfg.run.tensorboard)

    gpu_augment = GpuMultiCrop(multicrop_config(cfg.data)) if cfg.data.gpu_augment else None
    amp = precision.autocast(device.type)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    bad_samples = 0
    pbar = tqdm(total=total, initial=step, disable=not (info.is_main and cfg.run.progress),
                desc=f"{cfg.method} {cfg.model.arch}", dynamic_ncols=True)
    model.train()
    t_last, step_last, stop = time.perf_counter(), step, False
    start_epoch, start_batch = divmod(step, iters)
    epoch = start_epoch
    for epoch in range(start_epoch, o.epochs):
        sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        for batch in loader:
            it = step
            if gpu_augment is None:
                views, ok = batch
                views = [v.to(device, non_blocking=True) for v in views]
            else:
                images, sizes, ok = batch
                views = device_views(gpu_augment, images.to(device, non_blocking=True),
                                     sizes.to(device, non_blocking=True),
                                     augment_seed(cfg.run.seed, it, info.rank))
            for group in optimizer.param_groups:
                group["lr"] = float(lr_s[it])
                if not group.get("no_decay"):
                    group["weight_decay"] = float(wd_s[it])
            log_now = (it + 1) % cfg.run.log_every == 0 or it + 1 == total
            with amp:
                loss, stats = model(views, float(temp_s[epoch]), diagnostics=log_now)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if o.clip_grad > 0:
                scaler.unscale_(optimizer)
                stats["grad_norm"] = clip_gradients_per_parameter(student_params, o.clip_grad)
            if epoch < cfg.dino.freeze_last_layer_epochs:
                for p in last_layer:
                    p.grad = None
            scaler.step(optimizer)
            scaler.update()
            model.update_teacher(float(mom_s[it]))
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()),
                                   torch.full_like(bad_step, it), bad_step)
            bad_samples += int((~ok).sum())
            step += 1
            pbar.update(1)
            stop = bool(o.max_steps) and step >= o.max_steps
            if log_now or stop:
                _check_finite(bad_step, ckpt_path)
                # Each rank's losses cover its share of the batch: log the global mean.
                stats = D.mean_over_ranks(stats)
                now = time.perf_counter()
                record = {"step": step, "epoch": epoch,
                          **{k: round(float(v), 6) for k, v in stats.items()},
                          "lr": float(lr_s[it]), "wd": float(wd_s[it]),
                          "momentum": float(mom_s[it]), "teacher_temp": float(temp_s[epoch]),
                          "img_per_s": round((step - step_last) * o.batch_size
                                             * info.world_size / (now - t_last), 2),
                          "unreadable_replaced": bad_samples}
                if device.type == "cuda":
                    record["max_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                t_last, step_last = now, step
                if logger:
                    logger.log(record)
                pbar.set_postfix(loss=record["loss"], lr=f"{record['lr']:.2e}",
                                 ips=record["img_per_s"])
            if cfg.run.save_every_steps and step % cfg.run.save_every_steps == 0:
                _check_finite(bad_step, ckpt_path)
                save_checkpoint(ckpt_path, cfg, model, optimizer, scaler, step, epoch, info)
            if stop:
                break
        if stop:
            break
        if (epoch + 1) % cfg.run.save_every == 0 or epoch + 1 == o.epochs:
            _check_finite(bad_step, ckpt_path)
            save_checkpoint(ckpt_path, cfg, model, optimizer, scaler, step, epoch, info)
        if cfg.run.keep_every and (epoch + 1) % cfg.run.keep_every == 0:
            # A snapshot that later epochs never overwrite (for learning curves), as DINO's
            # checkpointNNNN.pth.
            _check_finite(bad_step, ckpt_path)
            save_checkpoint(ckpt_path.with_name(f"epoch{epoch + 1:04d}.pt"), cfg, model,
                            optimizer, scaler, step, epoch, info)
    if stop:
        _check_finite(bad_step, ckpt_path)
        save_checkpoint(ckpt_path, cfg, model, optimizer, scaler, step, epoch, info)
    pbar.close()
    if logger:
        logger.close()
    return run_dir


def _check_finite(bad_step: torch.Tensor, ckpt_path: Path) -> None:
    """Stop with a clear message if any step so far had a non-finite loss (host sync)."""
    if dist.is_available() and dist.is_initialized():  # any rank's NaN stops every rank
        bad_step = bad_step.clone()
        dist.all_reduce(bad_step, op=dist.ReduceOp.MAX)
    bad = int(bad_step)
    if bad >= 0:
        kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else \
            "no checkpoint was written before it"
        raise SelfPatchError(
            f"loss became NaN/inf at step {bad + 1}; training stopped and {kept}. "
            "Lower optim.base_lr, raise optim.warmup_epochs or use run.precision=fp32")
