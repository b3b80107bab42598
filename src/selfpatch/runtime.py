"""What runs fastest on this machine: the numeric precision and the number of CPU threads.

Both training (``run.precision``, ``run.threads``) and evaluation (``--precision``,
``--threads``) resolve their settings here, so the two can never pick different paths.

Precision ``auto``:

- CUDA: bf16 where the GPU supports it, else fp16 (with a gradient scaler when training).
- CPU: fp32 unless the CPU has native bf16 (oneDNN's check: AVX512-BF16 or AMX) *and* a short
  measurement shows bf16 autocast to be faster than fp32 for a transformer block of the
  model's width; on CPUs without it bf16 is emulated and about 10x slower, and even with it
  bf16 was measured slower than fp32 for ViT-Ti on some CPUs (docs/performance.md). The
  measurement takes about a second and is cached in ``~/.cache/selfpatch/cpu-precision.json``
  (``$SELFPATCH_CACHE`` overrides the folder), keyed by CPU, torch version, threads and width.
  fp16 is never chosen on a CPU. In distributed training rank 0 decides and broadcasts.
- Other devices: fp32.

Threads ``0`` (automatic): one per CPU core this process may use (``os.sched_getaffinity``),
the same as torch's default on an idle machine; on a busy machine, fewer (see
:func:`resolve_threads`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from selfpatch.errors import SelfPatchError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: bf16 must beat fp32 by this factor in the probe to be chosen (timing noise margin).
BF16_MIN_SPEEDUP = 1.10

_warned: set[str] = set()


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision: ``name`` (fp32 | bf16 | fp16), what was asked, and why."""

    name: str
    requested: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain fp32."""
        return AMP_DTYPES.get(self.name)

    def autocast(self, device_type: str):
        """``torch.autocast`` for bf16/fp16, a no-op context for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for logs: ``precision fp32 (auto: ...)``."""
        how = "auto" if self.requested == "auto" else "set explicitly"
        return f"precision {self.name} ({how}: {self.reason})"


def cache_dir() -> Path:
    """``$SELFPATCH_CACHE`` or ``~/.cache/selfpatch``."""
    env = os.environ.get("SELFPATCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "selfpatch"


def cpu_name() -> str:
    """The CPU as ``lscpu`` names it, with its family and model numbers (``/proc/cpuinfo``),
    e.g. ``"AMD EPYC (family 26 model 2)"``; else ``platform.processor()``."""
    try:
        name = cpu_name_from_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        name = None
    return name or platform.processor() or platform.machine() or "unknown CPU"


def cpu_name_from_cpuinfo(text: str) -> str | None:
    """Model name of the first processor in ``/proc/cpuinfo`` text, plus ``(family F model
    M)`` when given: virtual machines often report a bare "AMD EPYC", and two EPYC
    generations were recorded under that one name before."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends at the first blank line
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if not name:
        return None
    family, model = fields.get("cpu family"), fields.get("model")
    return f"{name} (family {family} model {model})" if family and model else name


def cpu_bf16_native() -> bool:
    """True when oneDNN reports native bf16 arithmetic (AVX512-BF16, AMX, or Arm BF16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # builds without oneDNN
        return False


def _time_block(dim: int, dtype: torch.dtype | None, reps: int) -> float:
    """Median seconds of forward + backward of one ViT block on ``(32, 50, dim)`` tokens."""
    from timm.models.vision_transformer import Block

    gen = torch.Generator().manual_seed(0)
    block = Block(dim, num_heads=max(1, dim // 64))
    x = torch.randn(32, 50, dim, generator=gen, requires_grad=True)
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        with (torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()):
            y = block(x)
        y.float().square().mean().backward()
        if i:  # the first run warms up oneDNN's kernel caches
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure_cpu_bf16_speedup(dim: int = 192, reps: int = 5) -> float:
    """fp32 time / bf16-autocast time of a ViT block of width ``dim`` (> 1: bf16 faster).

    Forward and backward of one timm ``Block`` on ``(32, 50, dim)`` tokens, which is the
    shape of the work in a CPU training step or a feature extraction. Runs interleaved and
    takes medians so that a short burst of other load affects both alike.
    """
    fp32, bf16 = [], []
    # The block's initialisation draws from the global RNG; a seeded run must not depend on
    # whether this measurement ran (first run on a machine) or came from the cache.
    with torch.random.fork_rng(devices=[]):
        for _ in range(2):
            fp32.append(_time_block(dim, None, reps))
            bf16.append(_time_block(dim, torch.bfloat16, reps))
    return min(fp32) / min(bf16)


def cached_cpu_bf16_speedup(dim: int) -> float:
    """:func:`measure_cpu_bf16_speedup`, measured once per (CPU, torch, threads, width)."""
    key = f"{cpu_name()}|torch {torch.__version__}|threads {torch.get_num_threads()}|dim {dim}"
    path = cache_dir() / "cpu-precision.json"
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    value = cache.get(key)
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    speedup = measure_cpu_bf16_speedup(dim)
    cache[key] = round(speedup, 3)
    try:  # a cache that cannot be written only costs a second next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
    return speedup


def warn_once(message: str) -> None:
    """A ``UserWarning`` shown once per process for each distinct message."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def resolve_precision(requested: str, device: torch.device | str, width: int = 192
                      ) -> PrecisionChoice:
    """Turn ``auto`` / ``fp32`` / ``bf16`` / ``fp16`` into the precision to run (module doc).

    Args:
        requested: the configured value.
        device: where the model runs.
        width: embedding width of the backbone (sizes the CPU bf16 measurement).

    An explicit bf16 or fp16 on a CPU without a fast path is honoured, with a warning.
    """
    if requested not in PRECISIONS:
        raise SelfPatchError(f"precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cuda":
        if requested != "auto":
            return PrecisionChoice(requested, requested, "as configured")
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", requested, "the GPU supports bf16")
        return PrecisionChoice("fp16", requested, "the GPU lacks bf16; fp16 with loss scaling")
    if device.type != "cpu":
        if requested == "auto":
            return PrecisionChoice("fp32", requested, f"{device.type} device")
        return PrecisionChoice(requested, requested, "as configured")

    native = cpu_bf16_native()
    if requested == "fp32":
        return PrecisionChoice("fp32", requested, "as configured")
    if requested == "bf16":
        if not native:
            warn_once(f"run.precision=bf16 on a CPU without native bf16 ({cpu_name()}): it is "
                      "emulated and about 10x slower than fp32; use precision auto or fp32")
        return PrecisionChoice("bf16", requested, "as configured" + (
            "" if native else "; this CPU emulates bf16 (slow)"))
    if requested == "fp16":
        warn_once("precision fp16 on a CPU has no fast path (measured about 7x slower than "
                  "fp32); use auto, fp32 or bf16")
        return PrecisionChoice("fp16", requested, "as configured; no fast fp16 path on CPUs")
    if not native:
        return PrecisionChoice("fp32", requested,
                               f"{cpu_name()} has no native bf16 (bf16 would be emulated)")
    speedup = cached_cpu_bf16_speedup(width)
    if speedup >= BF16_MIN_SPEEDUP:
        return PrecisionChoice("bf16", requested,
                               f"native bf16, measured {speedup:.2f}x faster than fp32")
    return PrecisionChoice("fp32", requested, f"native bf16 but measured {speedup:.2f}x the "
                           f"speed of fp32 (needs >= {BF16_MIN_SPEEDUP:.2f}x)")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's quota)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int = 0) -> tuple[int, str]:
    """Threads for torch's CPU kernels: ``requested`` when > 0, else :func:`usable_cores`.

    Returns ``(threads, reason)``; raises on a negative value.
    """
    if requested < 0:
        raise SelfPatchError(f"threads must be 0 (automatic) or more, got {requested}")
    if requested:
        return requested, "as configured"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:  # torchrun sets it to share cores between ranks
        return int(env), "OMP_NUM_THREADS"
    n = usable_cores()
    return n, f"one per usable CPU core ({n})"


def apply_threads(requested: int = 0) -> tuple[int, str]:
    """Resolve (:func:`resolve_threads`) and set ``torch.set_num_threads``; returns it."""
    n, reason = resolve_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n, reason


def resolve_device(name: str = "auto", local_rank: int | None = None,
                   key: str = "--device") -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` / ``auto`` (CUDA when available) as a torch device.

    ``local_rank`` (torchrun) picks this process's GPU for ``cuda``/``auto``; ``key`` names
    the setting in the one-line error for an unknown name or a missing GPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SelfPatchError(f"{key} {name} asked for CUDA but none is available; use cpu or auto")
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise SelfPatchError(f"{key} {name!r} is not a device name; use cpu, cuda or auto") \
            from exc
