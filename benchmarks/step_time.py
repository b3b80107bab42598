"""Training-step time, peak memory and FLOPs of ``dino`` vs ``dino+selfpatch``.

One step is the trainer's own ``train_step`` (imported, not copied): teacher + student
forward under autocast, loss, backward (through a GradScaler), per-parameter clipping, AdamW,
EMA teacher update. The
views are random tensors of the setting's crop sizes (data loading is measured apart, see
``--loader``). Usage, from the repository root::

    PYTHONPATH=src python benchmarks/step_time.py --device cpu --threads 1 --batch-size 8 \\
        --settings paper --archs vit_tiny --modes fp32 bf16 --out step_cpu.json
    PYTHONPATH=src python benchmarks/step_time.py --device cpu --threads 2 --batch-size 32 \\
        --settings cpu-long --modes fp32 --patch-sizes 16 8   # a finer grid, same crops
    PYTHONPATH=src python benchmarks/step_time.py --device cpu --threads 1 --batch-size 32 \\
        --settings cpu-long --modes fp32 --crops 64/32 96/32 96/48   # a finer grid, same patch
    PYTHONPATH=src python benchmarks/step_time.py --device cuda --batch-size 64 \\
        --archs vit_small --modes fp32 bf16 bf16+compile --loader --loader-workers 16

Settings: ``paper`` is ``configs/paper-imagenet-vit-s16.yaml`` (2 x 224 px + 8 x 96 px crops,
patch 16, heads 65536/4096) with the backbone from ``--archs``; ``cpu-quick`` is
``configs/cpu-quick.yaml`` as shipped (its own ViT-Ti/8, 64/32 px crops). ``--smoke`` shrinks
everything (tiny crops and heads, 2 steps) to test every code path in seconds.

Timing: every variant (method x mode) is built first, warmed up, then the timed steps are
interleaved (A B C A B C ...) so that a noisy, shared machine slows all variants alike;
the median per variant is reported. FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over
one fp32 eager step (matrix products, convolutions and attention, forward and backward;
element-wise work such as the softmax over 4096 patch prototypes is not counted). Memory:
``static`` = parameters, gradients, optimiser state and buffers of the variant; ``step`` = the
most memory allocated during a step above what was allocated before it (CUDA: the caching
allocator's counters; CPU: the profiler's allocation events over one extra step);
``peak`` = static + step, what a process training only this variant would need.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from selfpatch.config import Config, load_config
from selfpatch.methods.teacher_student import TeacherStudent
from selfpatch.train.factory import build_teacher_student
from selfpatch.train.optim import build_optimizer
from selfpatch.train.trainer import train_step as trainer_step

METHODS = ("dino", "dino+selfpatch")
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
SMOKE = ["data.global_size=48", "data.local_size=32", "data.n_local=2", "dino.out_dim=256",
         "dino.hidden_dim=64", "dino.bottleneck_dim=32", "selfpatch.out_dim=128"]


@dataclass
class Variant:
    """One (setting, arch, method, mode) with its model, optimiser and fixed input views."""

    setting: str
    arch: str
    method: str
    mode: str  # fp32 | bf16 | fp16, optionally "+compile"
    cfg: Config
    model: TeacherStudent
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    views: list[torch.Tensor]
    batch: int
    times: list[float] = field(default_factory=list)
    step_bytes: int = 0
    static_bytes: int = 0
    flops: int = 0

    @property
    def precision(self) -> str:
        return self.mode.split("+")[0]

    @property
    def compiled(self) -> bool:
        return self.mode.endswith("+compile")


def build_config(setting: str, arch: str, method: str, smoke: bool,
                 patch_size: int | None = None, crops: str | None = None) -> Config:
    """The setting's preset with ``method``, the paper setting's ``arch`` and, when given,
    another ``patch_size`` (crop sizes kept: a smaller patch means a finer token grid) or
    other ``crops`` ("GLOBAL/LOCAL" px, patch kept: larger crops mean a finer grid)."""
    preset = {"paper": "paper-imagenet-vit-s16", "cpu-quick": "cpu-quick",
              "cpu-long": "cpu-long"}[setting]
    overrides = [f"method={method}"]
    if setting == "paper":
        overrides.append(f"model.arch={arch}")
    if patch_size is not None:
        overrides.append(f"model.patch_size={patch_size}")
    extra = SMOKE if smoke else []
    if crops is not None:
        global_size, local_size = parse_crops(crops)
        # after SMOKE, so that a smoke test still times the crops asked for
        extra = extra + [f"data.global_size={global_size}", f"data.local_size={local_size}"]
    return load_config(preset, overrides + extra)


def parse_crops(text: str) -> tuple[int, int]:
    """``"96/32"`` -> ``(96, 32)``: global and local crop sizes in pixels."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"--crops: {text!r} is not GLOBAL/LOCAL in pixels, e.g. 96/32")
    return int(parts[0]), int(parts[1])


def build_variant(setting: str, arch: str, method: str, mode: str, batch: int,
                  device: torch.device, smoke: bool, backend: str = "inductor",
                  patch_size: int | None = None, crops: str | None = None) -> Variant:
    cfg = build_config(setting, arch, method, smoke, patch_size, crops)
    arch = f"{cfg.model.arch}/{cfg.model.patch_size}"
    if crops is not None:
        arch += f"@{cfg.data.global_size}/{cfg.data.local_size}"
    torch.manual_seed(0)
    model = build_teacher_student(cfg).to(device)
    if mode.endswith("+compile"):
        model.student.backbone.compile(backend=backend)  # as the trainer (run.compile)
        model.teacher.backbone.compile(backend=backend)
    optimizer = build_optimizer(model.student, device)
    precision = mode.split("+")[0]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    d = cfg.data
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(batch, 3, d.global_size, d.global_size, generator=g)
             for _ in range(2)]
    views += [torch.randn(batch, 3, d.local_size, d.local_size, generator=g)
              for _ in range(d.n_local)]
    views = [v.to(device) for v in views]
    return Variant(setting, arch, method, mode, cfg, model, optimizer, scaler, views, batch)


def train_step(v: Variant) -> None:
    """The trainer's own step (``selfpatch.train.trainer.train_step``) on fixed views.

    Real updates (lr 1e-5: lr 0 could take shortcuts), clipping at DINO's 3.0, the last layer
    not frozen (the steady state after the first epoch).
    """
    amp = (torch.autocast(v.views[0].device.type, dtype=AMP[v.precision])
           if v.precision in AMP else None)
    trainer_step(v.model, v.views, v.optimizer, v.scaler, lr=1e-5, weight_decay=0.04,
                 momentum=0.996, teacher_temp=0.04, clip_grad=3.0, freeze_last_layer=False,
                 amp=amp)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def static_bytes(v: Variant) -> int:
    """Parameters, their gradients, optimiser state and buffers (teacher included)."""
    seen, total = set(), 0

    def add(t: torch.Tensor | None) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()

    for p in v.model.parameters():
        add(p)
        add(p.grad)
    for b in v.model.buffers():
        add(b)
    for state in v.optimizer.state.values():
        for t in state.values():
            add(t)
    return total


def cpu_step_bytes(v: Variant) -> int:
    """Peak of (allocated - freed) CPU bytes during one step, from the profiler's events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train_step(v)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def count_flops(setting: str, arch: str, method: str, batch: int, device: torch.device,
                smoke: bool, patch_size: int | None = None, crops: str | None = None) -> int:
    """FLOPs of one fp32 eager step (forward + backward) on a throw-away copy."""
    v = build_variant(setting, arch, method, "fp32", batch, device, smoke,
                      patch_size=patch_size, crops=crops)
    with FlopCounterMode(display=False) as counter:
        train_step(v)
    del v
    return counter.get_total_flops()


def measure(variants: list[Variant], warmup: int, steps: int, device: torch.device) -> None:
    for v in variants:  # warm-up (compilation, allocator, oneDNN primitive caches)
        for _ in range(warmup):
            train_step(v)
        sync(device)
        v.static_bytes = static_bytes(v)
    for _ in range(steps):  # interleaved: A B C ... A B C ...
        for v in variants:
            if device.type == "cuda":
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = time.perf_counter()
            train_step(v)
            sync(device)
            v.times.append(time.perf_counter() - start)
            if device.type == "cuda":
                v.step_bytes = max(v.step_bytes,
                                   torch.cuda.max_memory_allocated(device) - before)
    if device.type == "cpu":
        for v in variants:
            v.step_bytes = cpu_step_bytes(v)


def machine_info(device: torch.device) -> dict:
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_avg_start": os.getloadavg()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
        info["avx512_bf16"] = "avx512_bf16" in lscpu
        info["amx"] = "amx_bf16" in lscpu
    except (OSError, subprocess.SubprocessError):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def loader_rates(setting: str, workers: int, batch: int, n_images: int, smoke: bool
                 ) -> dict[str, float]:
    """Images/s of the multi-crop loader alone, through benchmarks/loader_throughput.py."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import loader_throughput as lt

    from selfpatch.data.folder import ImageFolderDataset
    from selfpatch.data.transforms import (
        GpuMultiCrop,
        MultiCropConfig,
        MultiCropTransform,
        gpu_multicrop_collate,
        multicrop_collate,
    )

    cfg = build_config(setting, "vit_small", "dino+selfpatch", smoke).data
    config = MultiCropConfig(cfg.global_size, tuple(cfg.global_scale), cfg.local_size,
                             tuple(cfg.local_scale), cfg.n_local)
    image_size = (500, 375) if setting == "paper" and not smoke else (96, 96)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        lt.write_images(Path(tmp), n_images, image_size)
        for mode, transform, collate in (
                ("cpu-augment", MultiCropTransform(config), multicrop_collate),
                ("gpu-prep", GpuMultiCrop(config).loader_transform(), gpu_multicrop_collate)):
            dataset = ImageFolderDataset(Path(tmp), transform=transform)
            rates[mode] = lt.loader_rate(dataset, collate, workers, batch, pin=False)
    return rates


def report(variants: list[Variant], loader: dict, info: dict) -> list[str]:
    mib = 2.0**20
    lines = [f"# step_time: {info.get('gpu') or info.get('cpu_model', '?')}, torch "
             f"{info['torch']}, {info['torch_threads']} threads, {info['date']}",
             "", "| setting | arch | method | mode | batch | step ms (median) | img/s | "
             "GFLOP/step | static MiB | step MiB | peak MiB |", "|---|---|---|---|---|---|---|"
             "---|---|---|---|"]
    for v in variants:
        ms = statistics.median(v.times) * 1e3
        lines.append(
            f"| {v.setting} | {v.arch} | {v.method} | {v.mode} | {v.batch} | {ms:.1f} | "
            f"{v.batch / ms * 1e3:.1f} | {v.flops / 1e9:.1f} | {v.static_bytes / mib:.0f} | "
            f"{v.step_bytes / mib:.0f} | {(v.static_bytes + v.step_bytes) / mib:.0f} |")
    lines += ["", "| setting | arch | mode | time ratio sp/dino | FLOP ratio sp/dino | "
              "time ratio / FLOP ratio |", "|---|---|---|---|---|---|"]
    by_key = {(v.setting, v.arch, v.method, v.mode): v for v in variants}
    for v in variants:
        if v.method != "dino+selfpatch" or (v.setting, v.arch, "dino", v.mode) not in by_key:
            continue
        base = by_key[(v.setting, v.arch, "dino", v.mode)]
        t = statistics.median(v.times) / statistics.median(base.times)
        f = v.flops / base.flops if base.flops else float("nan")
        lines.append(f"| {v.setting} | {v.arch} | {v.mode} | {t:.3f} | {f:.3f} | {t / f:.3f} |")
    precision_rows = []
    for v in variants:
        base = by_key.get((v.setting, v.arch, v.method, "fp32"))
        if base is not None and v is not base:
            t = statistics.median(v.times) / statistics.median(base.times)
            precision_rows.append(f"| {v.setting} | {v.arch} | {v.method} | {v.mode} | {t:.3f} |")
    if precision_rows:  # only when a mode other than fp32 was timed
        lines += ["", "| setting | arch | method | mode | time / fp32 time |",
                  "|---|---|---|---|---|", *precision_rows]
    first: dict[tuple, Variant] = {}  # per setting/backbone/method/mode: the first grid
    for v in variants:
        first.setdefault((v.setting, v.arch.split("/")[0], v.method, v.mode), v)
    bases = [first[(v.setting, v.arch.split("/")[0], v.method, v.mode)] for v in variants]
    if any(base is not v for v, base in zip(variants, bases)):
        lines += ["", "| setting | arch | method | mode | time / time at the first grid | "
                  "FLOP ratio |", "|---|---|---|---|---|---|"]
        for v, base in zip(variants, bases):
            if base is not v:
                t = statistics.median(v.times) / statistics.median(base.times)
                f = v.flops / base.flops if base.flops else float("nan")
                lines.append(f"| {v.setting} | {v.arch} vs {base.arch} | {v.method} | "
                             f"{v.mode} | {t:.3f} | {f:.3f} |")
    if loader:
        lines += ["", "loader img/s vs step img/s (per process; a step faster than the loader "
                  "means the run is loader-bound):"]
        for setting, entry in loader.items():
            workers, rates = entry["workers"], entry["rates"]
            for v in variants:
                if v.setting != setting:
                    continue
                step = v.batch / statistics.median(v.times)
                parts = ", ".join(f"{mode} {rate:.0f} img/s ({rate / step:.2f}x step)"
                                  for mode, rate in rates.items())
                lines.append(f"- {setting} {v.arch} {v.method} {v.mode}: step {step:.1f} "
                             f"img/s; loader with {workers} workers: {parts}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--batch-size", type=int, default=8, help="per device")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per variant (default 1, 3 with compile)")
    parser.add_argument("--settings", nargs="+", default=["paper", "cpu-quick"],
                        choices=["paper", "cpu-quick", "cpu-long"])
    parser.add_argument("--archs", nargs="+", default=["vit_tiny", "vit_small"],
                        help="backbones for the paper setting")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--patch-sizes", nargs="+", type=int, default=[None],
                        help="patch sizes to time side by side in one group (default: the "
                             "setting's own); the crops keep their size, so the grid changes")
    parser.add_argument("--crops", nargs="+", default=[None],
                        help="GLOBAL/LOCAL crop sizes in px to time side by side, e.g. 64/32 "
                             "96/32 (default: the setting's own); the patch keeps its size")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="fp32 bf16 fp16, each optionally +compile (default: fp32 bf16 on "
                             "CPU; fp32 bf16 fp16 bf16+compile on CUDA)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend for +compile modes ('eager' only traces: "
                             "a quick check of the code path)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--loader", action="store_true",
                        help="also time the data loader (loader_throughput.py) per setting")
    parser.add_argument("--loader-workers", type=int, default=os.cpu_count())
    parser.add_argument("--loader-images", type=int, default=None,
                        help="images per loader pass (default 48 per worker)")
    parser.add_argument("--no-flops", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps: a quick test")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    for crops in args.crops:  # a typo fails now, not after minutes of timing
        if crops is not None:
            parse_crops(crops)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    modes = args.modes or (["fp32", "bf16", "fp16", "bf16+compile"] if device.type == "cuda"
                           else ["fp32", "bf16"])
    if args.smoke:
        args.steps, args.warmup = min(args.steps, 2), args.warmup or 1
        args.archs = args.archs[:1]
    info = machine_info(device)
    print(json.dumps(info), flush=True)

    variants: list[Variant] = []
    for setting in args.settings:
        archs = args.archs if setting == "paper" else ["preset"]
        for arch in archs:
            group = []
            for patch, crops in itertools.product(args.patch_sizes, args.crops):
                for method in args.methods:
                    flops = 0 if args.no_flops else count_flops(
                        setting, arch, method, args.batch_size, device, args.smoke, patch, crops)
                    for mode in modes:
                        group.append(build_variant(setting, arch, method, mode,
                                                   args.batch_size, device, args.smoke,
                                                   args.compile_backend, patch, crops))
                        group[-1].flops = flops
            warmup = args.warmup if args.warmup is not None else (
                3 if any(v.compiled for v in group) else 1)
            start = time.perf_counter()
            measure(group, warmup, args.steps, device)
            print(f"{setting} {arch}: measured {len(group)} variants in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
            variants += group
            for v in group:  # free the models before the next group, keep the numbers
                v.model = v.optimizer = v.views = None  # type: ignore[assignment]
            if device.type == "cuda":
                torch.cuda.empty_cache()

    loader = {}
    if args.loader:
        for setting in args.settings:
            n = args.loader_images or (8 if args.smoke else 48) * max(args.loader_workers, 1)
            rates = loader_rates(setting, args.loader_workers, 16 if not args.smoke else 4, n,
                                 args.smoke)
            loader[setting] = {"workers": args.loader_workers, "rates": rates}
            print(f"loader {setting}: {rates}", flush=True)

    info["load_avg_end"] = os.getloadavg()
    lines = report(variants, loader, info)
    print("\n".join(lines), flush=True)
    if args.out:
        rows = [{"setting": v.setting, "arch": v.arch, "method": v.method, "mode": v.mode,
                 "batch": v.batch, "step_s": v.times, "step_s_median": statistics.median(v.times),
                 "img_per_s": v.batch / statistics.median(v.times), "flops": v.flops,
                 "static_bytes": v.static_bytes, "step_bytes": v.step_bytes}
                for v in variants]
        args.out.write_text(json.dumps({"machine": info, "args": {k: str(x) for k, x in
                                                                   vars(args).items()},
                                        "results": rows, "loader": loader,
                                        "report": lines}, indent=2))


if __name__ == "__main__":
    main()
