"""The pre-training loop, shaped like DINO's ``main_dino.py``: ``pretrain(cfg)`` sets up,
``train_one_epoch`` runs the batches of one epoch, ``train_step`` is one optimisation step.

Works on CPU, one GPU or torchrun/DDP. Objects come from :mod:`selfpatch.train.factory`; the
checkpoint format from :mod:`selfpatch.checkpoint`. Inside a step nothing waits on the host
except at the logging interval (``run.log_every``), where losses are read, a non-finite loss
stops the run (the last checkpoint stays the last *good* one) and a metrics line is written.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from selfpatch import runtime
from selfpatch.checkpoint import (
    backbone_state,
    load_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from selfpatch.config import Config, flatten_dict, resume_changes
from selfpatch.data.seeded import sample_seed
from selfpatch.data.transforms import GpuMultiCrop
from selfpatch.errors import SelfPatchError
from selfpatch.io import remove_stale_temporaries
from selfpatch.methods.teacher_student import TeacherStudent
from selfpatch.models.loading import load_backbone_state
from selfpatch.train import distributed as D
from selfpatch.train import signals
from selfpatch.train.factory import (
    Schedules,
    TrainData,
    build_schedules,
    build_teacher_student,
    build_train_data,
    check_buildable,
)
from selfpatch.train.optim import build_optimizer, clip_gradients_per_parameter, gradient_norm
from selfpatch.train.run_dir import MetricsLogger, environment, write_yaml


def run_directory(cfg: Config) -> Path:
    """``run.output_dir`` with ``{name}`` filled from ``run.name`` (``{preset}``, ``{method}``)."""
    name = cfg.run.name.format(preset=cfg.preset or "custom",
                               method=cfg.method.replace("+", "-"))
    return Path(cfg.run.output_dir.format(name=name))


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
        state = backbone_state(load_training_checkpoint(source))
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
    save_training_checkpoint(
        path, config=cfg.to_dict(), backbone_spec=model.student.backbone.spec.to_dict(),
        model=model.state_dict(), optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
        step=step, epoch=epoch, world_size=info.world_size, rng=rng)


class NonFiniteStep(SelfPatchError):
    """A step whose loss or gradient norm is NaN/inf; raised before the optimiser step."""

    def __init__(self, quantity: str) -> None:
        super().__init__(f"{quantity} became NaN/inf")
        self.quantity = quantity


def train_step(model: TeacherStudent, views: list[torch.Tensor],
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, *, lr: float,
               weight_decay: float, momentum: float, teacher_temp: float, clip_grad: float,
               freeze_last_layer: bool, amp: Any = None, diagnostics: bool = False
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step on multi-crop ``views`` (V x ``(B, 3, S_v, S_v)``, globals first).

    Sets lr / weight decay (decayed group only), runs the loss under ``amp`` (an autocast
    context or None), backward through ``scaler``, DINO's per-parameter gradient clipping
    (``clip_grad`` > 0), drops the heads' last-layer gradients while ``freeze_last_layer``,
    steps the optimiser and moves the teacher (EMA with ``momentum``). Returns the loss and
    the detached statistics (with ``grad_norm``, the pre-clip global norm).

    Raises :class:`NonFiniteStep` *before* the optimiser step when the loss or the gradient
    norm is NaN/inf, so the weights stay those of the last good step. That check reads one
    value on the host per step, as DINO's ``math.isfinite(loss.item())`` does. With fp16's
    GradScaler, inf gradients are the scaler's business (it skips the step and lowers its
    scale), so only the loss is checked there.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group.get("no_decay"):
            group["weight_decay"] = weight_decay
    with amp if amp is not None else contextlib.nullcontext():
        loss, stats = model(views, teacher_temp, diagnostics=diagnostics)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    params = [p for p in model.student.parameters() if p.requires_grad]
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        stats["grad_norm"] = clip_gradients_per_parameter(params, clip_grad)
    else:
        stats["grad_norm"] = gradient_norm(params)
    checked = torch.stack([loss.detach().float(), stats["grad_norm"].float().to(loss.device)])
    finite = torch.isfinite(checked).tolist()  # the one host sync of a step
    if not finite[0]:
        raise NonFiniteStep("the loss")
    if not finite[1] and not scaler.is_enabled():
        raise NonFiniteStep("the gradient norm")
    if freeze_last_layer:
        for p in model.last_layer_parameters():
            p.grad = None
    scaler.step(optimizer)
    scaler.update()
    model.update_teacher(momentum)
    return loss, stats


@dataclass
class LoopState:
    """What changes from step to step, besides the model and optimiser."""

    step: int
    bad_samples: int = 0
    t_last: float = 0.0
    step_last: int = 0


@dataclass
class Loop:
    """Everything ``train_one_epoch`` needs, built once by :func:`pretrain`."""

    cfg: Config
    info: D.DistInfo
    device: torch.device
    model: TeacherStudent
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data: TrainData
    schedules: Schedules
    amp: Any
    precision: str
    ckpt_path: Path
    logger: MetricsLogger | None
    pbar: tqdm
    total: int
    state: LoopState


def train_one_epoch(loop: Loop, epoch: int) -> str | None:
    """Run the remaining batches of ``epoch``.

    Returns ``None`` when the epoch is done, ``"max_steps"`` when ``optim.max_steps`` is hit,
    or the name of the signal (``SIGTERM``/``SIGINT``) that asked the run to stop; the step
    under way when a signal arrives is finished first.
    """
    cfg, o, st, sch = loop.cfg, loop.cfg.optim, loop.state, loop.schedules
    for batch in loop.data.loader:
        it = st.step
        if loop.data.gpu_augment is None:
            views, ok = batch
            views = [v.to(loop.device, non_blocking=True) for v in views]
        else:
            images, sizes, ok = batch
            views = device_views(loop.data.gpu_augment,
                                 images.to(loop.device, non_blocking=True),
                                 sizes.to(loop.device, non_blocking=True),
                                 augment_seed(cfg.run.seed, it, loop.info.rank))
        log_now = (it + 1) % cfg.run.log_every == 0 or it + 1 == loop.total
        try:
            _, stats = train_step(
                loop.model, views, loop.optimizer, loop.scaler, lr=float(sch.lr[it]),
                weight_decay=float(sch.weight_decay[it]), momentum=float(sch.momentum[it]),
                teacher_temp=float(sch.teacher_temp[epoch]), clip_grad=o.clip_grad,
                freeze_last_layer=epoch < cfg.dino.freeze_last_layer_epochs, amp=loop.amp,
                diagnostics=log_now)
        except NonFiniteStep as exc:
            raise SelfPatchError(_non_finite_message(loop, exc.quantity, it + 1)) from None
        st.bad_samples += int((~ok).sum())
        st.step += 1
        loop.pbar.update(1)
        stop = bool(o.max_steps) and st.step >= o.max_steps
        if log_now or stop:
            _log(loop, epoch, it, stats)
        if cfg.run.save_every_steps and st.step % cfg.run.save_every_steps == 0:
            _save(loop, loop.ckpt_path, epoch)
        if stop:
            return "max_steps"
        signal_name = signals.requested(loop.info, loop.device)
        if signal_name:
            return signal_name
    return None


def _non_finite_message(loop: Loop, quantity: str, step: int) -> str:
    """What happened, what was kept, what to try (no fp32 advice for a run already in fp32)."""
    kept = (f"the last good checkpoint {loop.ckpt_path} is unchanged"
            if loop.ckpt_path.exists() else "no checkpoint had been written yet")
    o = loop.cfg.optim
    tries = [f"lower optim.base_lr (now {o.base_lr:g})",
             f"raise optim.warmup_epochs (now {o.warmup_epochs})"]
    if o.clip_grad <= 0:
        tries.append("turn on gradient clipping (optim.clip_grad=3.0)")
    if loop.precision != "fp32":
        tries.append(f"use run.precision=fp32 (now {loop.precision})")
    return (f"{quantity} became NaN/inf at step {step}; that step was not applied and {kept}. "
            f"Try: {'; '.join(tries)}")


def _log(loop: Loop, epoch: int, it: int, stats: dict[str, torch.Tensor]) -> None:
    """One metrics line (global means over ranks) and the progress bar's numbers."""
    st, sch = loop.state, loop.schedules
    stats = D.mean_over_ranks(stats)  # each rank's losses cover its share of the batch
    now = time.perf_counter()
    record = {"step": st.step, "epoch": epoch,
              **{k: round(float(v), 6) for k, v in stats.items()},
              "lr": float(sch.lr[it]), "wd": float(sch.weight_decay[it]),
              "momentum": float(sch.momentum[it]), "teacher_temp": float(sch.teacher_temp[epoch]),
              "img_per_s": round((st.step - st.step_last) * loop.cfg.optim.batch_size
                                 * loop.info.world_size / (now - st.t_last), 2),
              "unreadable_replaced": st.bad_samples}
    if loop.device.type == "cuda":
        record["max_mem_gb"] = round(torch.cuda.max_memory_allocated(loop.device) / 2**30, 3)
    st.t_last, st.step_last = now, st.step
    if loop.logger:
        loop.logger.log(record)
    loop.pbar.set_postfix(loss=record["loss"], lr=f"{record['lr']:.2e}", ips=record["img_per_s"])


def _save(loop: Loop, path: Path, epoch: int) -> None:
    save_checkpoint(path, loop.cfg, loop.model, loop.optimizer, loop.scaler, loop.state.step,
                    epoch, loop.info)


def pretrain(cfg: Config, resume: bool = False) -> Path:
    """Train ``cfg`` to completion (or ``optim.max_steps``); return the run directory."""
    check_buildable(cfg)  # bad values fail here, in one line, before data or processes
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
    if info.is_main:  # fail now, not after building the data and the model
        try:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SelfPatchError(f"run.output_dir: cannot create {ckpt_path.parent} "
                                 f"({exc.strerror or exc}); choose a writable folder") from None

    data = build_train_data(cfg, info, device)
    model = build_teacher_student(cfg).to(device)
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

    o = cfg.optim
    iters = data.sampler.batches_per_epoch
    total = o.epochs * iters
    schedules = build_schedules(cfg, iters, info.world_size)

    step = 0
    if resume:
        ckpt = load_training_checkpoint(ckpt_path)
        changed = resume_changes(ckpt.get("config", {}), cfg)
        if changed:
            old = flatten_dict(ckpt.get("config", {}))
            new = flatten_dict(cfg.to_dict())
            listed = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
            raise SelfPatchError(
                f"--resume: {ckpt_path} was trained with another configuration ({listed}); "
                "resume with the same settings, or allow a deliberate change with "
                f"run.allow_changes=[{','.join(changed)}]")
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
                   n_images=len(data.dataset), unreadable_images=len(data.dataset.bad_files),
                   iters_per_epoch=iters, total_steps=total, lr=schedules.peak_lr,
                   total_batch=o.batch_size * info.world_size)
        (run_dir / "environment.json").write_text(json.dumps(env, indent=2))
        logger = MetricsLogger(run_dir, cfg.run.tensorboard)
        # Steps logged after the checkpoint are about to be logged again; on a fresh start
        # (step 0) that drops the lines of an attempt killed before its first checkpoint.
        logger.keep_until(step)
        for name in ("last.pt", "epoch*.pt"):  # left by a process killed while saving
            remove_stale_temporaries(ckpt_path.parent, name)

    pbar = tqdm(total=total, initial=step, disable=not (info.is_main and cfg.run.progress),
                desc=f"{cfg.method} {cfg.model.arch}", dynamic_ncols=True)
    state = LoopState(step=step, t_last=time.perf_counter(), step_last=step)
    loop = Loop(cfg, info, device, model, optimizer, scaler, data, schedules,
                precision.autocast(device.type), precision.name, ckpt_path, logger, pbar,
                total, state)
    model.train()
    start_epoch, start_batch = divmod(step, iters)
    epoch, reason = start_epoch, None
    with signals.graceful_stop():
        for epoch in range(start_epoch, o.epochs):
            data.sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
            reason = train_one_epoch(loop, epoch)
            if reason:
                break
            if (epoch + 1) % cfg.run.save_every == 0 or epoch + 1 == o.epochs:
                _save(loop, ckpt_path, epoch)
            if cfg.run.keep_every and (epoch + 1) % cfg.run.keep_every == 0:
                # A snapshot that later epochs never overwrite (for learning curves), as
                # DINO's checkpointNNNN.pth.
                _save(loop, ckpt_path.with_name(f"epoch{epoch + 1:04d}.pt"), epoch)
        if reason:
            _save(loop, ckpt_path, epoch)
    pbar.close()
    if logger:
        logger.close()
    if reason and reason != "max_steps":
        raise signals.Stopped(reason, state.step, ckpt_path)
    return run_dir
