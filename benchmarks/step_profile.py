"""Where a training step's time goes, by component: torch.profiler over a few steps.

Prepared for a lent GPU (issue: SelfPatch's share of the step runs at lower efficiency than
the backbone). Wraps the forward of each component of the student and teacher (backbone,
image head, patch head, aggregation module) and the two losses in ``record_function``
ranges, profiles ``--steps`` steps after warm-up and writes:

- ``<out>/profile_<method>_<mode>.txt``: self device time of the 40 most expensive kernels and
  the time inside each component range (forward; backward kernels are listed by name);
- ``<out>/trace_<method>_<mode>.json``: a Chrome trace (open in chrome://tracing or Perfetto).

Usage, from the repository root (the same command measures "before" and "after" a change
when run on two commits)::

    python benchmarks/step_profile.py --device cuda --batch-size 64 --arch vit_small \\
        --methods dino dino+selfpatch --modes bf16 --out $OUT/profile
    python benchmarks/step_profile.py --smoke --out /tmp/profile      # CPU, seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import build_variant, sync, train_step  # noqa: E402

COMPONENTS = ("backbone", "image_head", "patch_head", "aggregator")


def label_components(model: torch.nn.Module) -> list:
    """Forward hooks opening a ``record_function`` range per component; returns handles."""
    handles = []
    for side in ("student", "teacher"):
        net = getattr(model, side)
        for name in COMPONENTS:
            # The backbone is entered through forward_tokens (no hooks): label its blocks.
            module = net.backbone.vit.blocks if name == "backbone" else getattr(net, name, None)
            if module is None:
                continue
            ranges: list = []

            def pre(mod, args, label=f"{side}.{name}", ranges=ranges):
                ranges.append(record_function(label))
                ranges[-1].__enter__()

            def post(mod, args, out, ranges=ranges):
                ranges.pop().__exit__(None, None, None)

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--arch", default="vit_small")
    parser.add_argument("--setting", default="paper", choices=["paper", "cpu-quick"])
    parser.add_argument("--methods", nargs="+", default=["dino", "dino+selfpatch"])
    parser.add_argument("--modes", nargs="+", default=["bf16"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU, 1 step")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.smoke:
        args.batch_size, args.steps, args.warmup, args.arch = 2, 1, 1, "vit_tiny"
    args.out.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for method in args.methods:
        for mode in args.modes:
            v = build_variant(args.setting, args.arch, method, mode, args.batch_size, device,
                              args.smoke)
            handles = label_components(v.model)
            for _ in range(args.warmup):
                train_step(v)
            sync(device)
            with profile(activities=activities) as prof:
                for _ in range(args.steps):
                    train_step(v)
                sync(device)
            for h in handles:
                h.remove()
            tag = f"{method.replace('+', '-')}_{mode}"
            table = prof.key_averages().table(sort_by=sort, row_limit=40)
            ranges = [e for e in prof.key_averages() if "." in e.key and
                      e.key.split(".")[0] in ("student", "teacher")]
            lines = [f"{method} {mode} {v.arch} batch {args.batch_size} on {device}, "
                     f"{args.steps} profiled steps", "", "component forward ranges:"]
            for e in sorted(ranges, key=lambda e: e.key):
                dev = getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0)
                lines.append(f"  {e.key:24s} cpu {e.cpu_time_total / 1e3:9.1f} ms  "
                             f"device {dev / 1e3:9.1f} ms  calls {e.count}")
            text = "\n".join(lines) + "\n\n" + table
            (args.out / f"profile_{tag}.txt").write_text(text)
            prof.export_chrome_trace(str(args.out / f"trace_{tag}.json"))
            print(text[:4000], flush=True)
            del v
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
