"""``selfpatch`` command line: pretrain, export, data, eval, finetune, presets.

Every user error surfaces as one line ``selfpatch: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from selfpatch.errors import SelfPatchError


def _pretrain(args: argparse.Namespace) -> int:
    from selfpatch.config import load_config
    from selfpatch.train import signals
    from selfpatch.train.trainer import pretrain

    signals.COMMAND_LINE[:] = args.argv  # for the resume command printed after a signal
    cfg = load_config(args.config, args.overrides)
    run_dir = pretrain(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(f"run directory: {run_dir}")
        print(f"checkpoint:    {run_dir / 'checkpoints' / 'last.pt'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from selfpatch.models.export import export_backbone, export_converted, timm_load_snippet

    if args.format != "timm":
        path = export_converted(args.checkpoint, args.format, args.out, args.which)
        print(f"wrote {path} ({args.format} key layout; docs/finetune.md says how to load it)")
        return 0
    path, spec = export_backbone(args.checkpoint, args.out, args.which)
    print(f"wrote {path}\nload it with timm:\n{timm_load_snippet(path, spec)}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from selfpatch.config import load_config, preset_names, valid_keys

    if args.name:
        import yaml

        print(yaml.safe_dump(load_config(args.name, args.overrides).to_dict(), sort_keys=False))
    else:
        print("presets: " + ", ".join(preset_names()))
        print("keys:    " + ", ".join(valid_keys()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfpatch", description="DINO + SelfPatch pre-training and dense evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pre-train a ViT (default preset: cpu-quick)",
                       description="Pre-train with a preset and key=value overrides, e.g. "
                       "`selfpatch pretrain --config paper-imagenet-vit-s16 data.path=/data "
                       "optim.batch_size=128`.")
    p.add_argument("--config", default="cpu-quick", help="preset name or YAML file")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in run.output_dir from its checkpoints/last.pt")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. optim.epochs=5")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("export", help="write the teacher backbone as timm-loadable safetensors")
    p.add_argument("checkpoint", help="run directory, checkpoints/last.pt (or, with --format, "
                   "a .safetensors export)")
    p.add_argument("--out", default=None, help="output .safetensors (default: in the run dir)")
    p.add_argument("--which", default="teacher", choices=["teacher", "student"])
    p.add_argument("--format", default="timm", choices=["timm", "mmseg", "mmdet", "detectron2"],
                   help="timm safetensors (default) or a .pth in mmseg's / mmdet's (mmpretrain) "
                   "/ detectron2's layout")
    p.set_defaults(func=_export)

    p = sub.add_parser("presets", help="list presets and config keys, or show one resolved")
    p.add_argument("name", nargs="?")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_presets)

    from selfpatch.data.cli import register as register_data
    from selfpatch.evaluate.cli import register as register_eval
    from selfpatch.finetune.cli import register as register_finetune

    register_data(sub)
    register_eval(sub)
    register_finetune(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On a small machine
    # shared with DataLoader workers, spinning threads made CPU steps up to 10x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    # Overrides may come before or after the options (`pretrain a=1 --resume b=2`): argparse
    # stops the positional list at the first option, so collect the rest here.
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except SelfPatchError as exc:
        from selfpatch.train.signals import Stopped

        if isinstance(exc, Stopped):
            print(f"selfpatch: {exc}", file=sys.stderr)
            return exc.exit_code
        print(f"selfpatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfpatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
