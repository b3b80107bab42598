"""``selfpatch data``: build the built-in data set and draw a picture of it.

    selfpatch data build [--version v2] [--root DIR] [--source DIR] [--seed N] [--n-pretrain N] ...
    selfpatch data show  [--out PNG] [--n N]   (builds first if needed)

Errors are raised as :class:`~selfpatch.errors.SelfPatchError`; the top-level CLI prints them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selfpatch.data.builtin import VERSION, BuiltinSpec, ensure_builtin, write_preview
from selfpatch.data.builtin.looks import LOOKS
from selfpatch.errors import SelfPatchError

#: Spec fields exposed as ``--flag`` options (seed has its own); sizes people change.
_SIZE_OPTIONS = (
    "n_pretrain",
    "n_seg_train",
    "n_seg_val",
    "n_videos",
    "video_frames",
    "n_knn_train",
    "n_knn_val",
    "scene_size",
    "video_size",
    "knn_size",
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options that pick a build: where, from what, which seed and sizes."""
    defaults = BuiltinSpec()
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="cache root (default: $SELFPATCH_DATA or ~/.cache/selfpatch/data)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="folder with the Fashion-MNIST IDX files (default: the system copy "
        "from `apt-get install dataset-fashion-mnist`, else a download)",
    )
    parser.add_argument(
        "--version",
        default=f"v{VERSION}",
        metavar="vN",
        help=f"data version (default v{VERSION}; v1 = the first release, kept so old "
        "results stay reproducible; docs/data.md)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="generation seed")
    for name in _SIZE_OPTIONS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=int,
            default=getattr(defaults, name),
            metavar="N",
            help=f"default {getattr(defaults, name)}",
        )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes used to render (default: all CPUs, at most 8)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_version(text: str) -> int:
    """``v2`` / ``2`` -> 2; an unknown version is a one-line error listing the known ones."""
    digits = text[1:] if text.lower().startswith("v") else text
    if not digits.isdigit() or int(digits) not in LOOKS:
        known = ", ".join(f"v{v}" for v in sorted(LOOKS))
        raise SelfPatchError(f"--version {text!r} is not a data version; choose one of {known}")
    return int(digits)


def _spec(args: argparse.Namespace) -> BuiltinSpec:
    sizes = {n: getattr(args, n) for n in _SIZE_OPTIONS}
    return BuiltinSpec.for_version(parse_version(args.version), seed=args.seed, **sizes)


def _build(args: argparse.Namespace):
    started = time.perf_counter()
    data = ensure_builtin(
        _spec(args),
        root=args.root,
        source=args.source,
        progress=not args.quiet,
        workers=args.workers,
        force=getattr(args, "force", False),
    )
    return data, time.perf_counter() - started


def cmd_build(args: argparse.Namespace) -> int:
    """``selfpatch data build``: build (or reuse) and print the paths and the time taken."""
    data, seconds = _build(args)
    print(f"root:     {data.root}")
    print(f"pretrain: {data.pretrain_dir}")
    print(f"seg:      {data.seg_root}  (ADE20K layout)")
    print(f"davis:    {data.davis_root}  (DAVIS 2017 layout)")
    print(f"knn:      {data.knn_root}  (ImageFolder layout)")
    print(f"time:     {seconds:.1f} s")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``selfpatch data show``: write a picture of scenes, labels and a clip; print its path."""
    data, _ = _build(args)
    out = args.out if args.out is not None else data.root / "preview.png"
    print(write_preview(data, out, n=args.n))
    return 0


def register(subparsers) -> None:
    """Add the ``data`` command to the top-level CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "data",
        help="build or show the built-in data set (fashion-scenes)",
        description="The built-in data set: Fashion-MNIST objects composed into scenes and "
        "videos, written in ADE20K / DAVIS 2017 / ImageFolder layouts (see docs/data.md).",
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build the data set (or reuse the cached one)")
    _add_common(build)
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=cmd_build)

    show = commands.add_parser("show", help="write a PNG of samples with label overlays")
    _add_common(show)
    show.add_argument(
        "--out",
        type=Path,
        default=None,
        help="PNG to write (default: preview.png in the data folder)",
    )
    show.add_argument("--n", type=int, default=8, help="samples per row")
    show.set_defaults(func=cmd_show)
