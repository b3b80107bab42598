"""``selfpatch eval {davis,seg,knn,attention,all}``: argparse wiring of the evaluation suite.

The top-level ``selfpatch`` command calls :func:`register`; every handler returns an exit code
and raises :class:`~selfpatch.errors.SelfPatchError` for user errors (printed on one line).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfpatch.evaluate.attention import parse_queries
from selfpatch.evaluate.options import TASKS, EvalOptions
from selfpatch.evaluate.report import (
    default_out_dir,
    evaluate_all,
    json_safe,
    load_for_eval,
    run_task,
    summary_metrics,
)
from selfpatch.evaluate.seg import FEATURE_DTYPES
from selfpatch.runtime import PRECISIONS, apply_threads, resolve_device

#: Defaults shared with the Python API.
D = EvalOptions()

SOURCE_HELP = ("run directory, training checkpoint (.pt), exported backbone (.safetensors) or "
               "random:ARCH[:PATCH] (e.g. random:vit_tiny:8)")


def _common(p: argparse.ArgumentParser, several: bool = False) -> None:
    if several:
        p.add_argument("--checkpoint", action="append", required=True, metavar="SOURCE",
                       help=SOURCE_HELP + "; repeat for a side-by-side table")
    else:
        p.add_argument("--checkpoint", required=True, metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--out", default=None,
                   help="output folder (default: <run>/eval for a run directory, "
                        "else runs/eval-<timestamp>)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, default=D.threads,
                   help="CPU threads for torch (default 0: one per usable core, measured "
                        "fastest on idle and busy machines; docs/performance.md)")
    p.add_argument("--precision", default=D.precision, choices=PRECISIONS,
                   help="backbone precision (default auto: bf16 on GPUs; on CPUs only where "
                        "bf16 is native and measured faster, else fp32)")
    p.add_argument("--batch-size", type=int, default=D.batch_size,
                   help=f"images per forward pass (default {D.batch_size})")
    p.add_argument("--data-root", default=None,
                   help="folder holding real data sets (DAVIS/, ADEChallengeData2016/, "
                        "imagenet/); default: the built-in data")
    p.add_argument("--builtin-version", type=int, default=D.builtin_version, choices=(1, 2),
                   help="built-in data version when no real data is given (default 2; 1 = "
                        "the first release, to repeat old results)")


def _davis(p: argparse.ArgumentParser, root: bool = True) -> None:
    g = p.add_argument_group("DAVIS label propagation")
    if root:
        g.add_argument("--davis-root", default=None, help="DAVIS 2017 folder")
    g.add_argument("--split", default="val", help="ImageSets/2017 list (default val)")
    g.add_argument("--sequences", default=None, help="comma-separated subset of sequences")
    g.add_argument("--short-side", type=int, default=None,
                   help="frame short side fed to the network (default: native for the "
                        "built-in data, 480 for real DAVIS; 0 = native)")
    g.add_argument("--n-last-frames", type=int, default=D.n_last_frames,
                   help=f"previous frames in the context (default {D.n_last_frames})")
    g.add_argument("--size-mask-neighborhood", type=int, default=D.size_mask_neighborhood,
                   help="spatial window radius in patches (default "
                        f"{D.size_mask_neighborhood}; 0 = whole frame)")
    g.add_argument("--topk", type=int, default=D.topk,
                   help=f"sources voting per patch (default {D.topk})")
    g.add_argument("--davis-temperature", type=float, default=D.davis_temperature,
                   help=f"affinity temperature (default {D.davis_temperature})")


def _seg(p: argparse.ArgumentParser, root: bool = True) -> None:
    g = p.add_argument_group("segmentation linear probe")
    if root:
        g.add_argument("--seg-root", default=None, help="ADE20K-layout folder")
    g.add_argument("--num-classes", type=int, default=None,
                   help="classes (default: 10 built-in, 150 for a real root)")
    g.add_argument("--seg-image-size", type=int, default=None,
                   help="square input side (default: native built-in, 512 real)")
    g.add_argument("--seg-epochs", type=int, default=D.seg_epochs,
                   help=f"probe epochs (default {D.seg_epochs})")
    g.add_argument("--seg-lr", type=float, default=D.seg_lr,
                   help=f"AdamW learning rate (default {D.seg_lr})")
    g.add_argument("--seg-batch-size", type=int, default=D.seg_batch_size,
                   help=f"probe images per step (default {D.seg_batch_size})")
    g.add_argument("--seg-seed", type=int, default=D.seg_seed)
    g.add_argument("--seg-feature-dtype", default=D.seg_feature_dtype,
                   choices=tuple(FEATURE_DTYPES),
                   help="storage of the cached features (default float32; float16 halves the "
                        "cache, e.g. ~16 GB instead of ~32 GB for ADE20K train at ViT-S/16)")
    g.add_argument("--no-reduce-zero-label", dest="reduce_zero_label", action="store_false",
                   help="labels are already 0..C-1 (255 = ignore) instead of 0 = ignore")
    g.add_argument("--train-limit", type=int, default=0, help="use the first N train images")
    g.add_argument("--val-limit", type=int, default=0, help="use the first N val images")


def _knn(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("k-NN")
    g.add_argument("--knn-root", default=None, help="ImageFolder root with train/ and val/")
    g.add_argument("--knn-k", type=int, default=D.knn_k,
                   help=f"neighbours (default {D.knn_k})")
    g.add_argument("--knn-temperature", type=float, default=D.knn_temperature,
                   help=f"vote temperature (default {D.knn_temperature})")
    g.add_argument("--knn-image-size", type=int, default=None,
                   help="input side (default: native built-in, 224 real)")
    g.add_argument("--center-crop", dest="center_crop", action="store_true", default=None,
                   help="resize to size*256/224 then centre-crop (default for real data)")
    g.add_argument("--no-center-crop", dest="center_crop", action="store_false")


def _attention(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pictures")
    g.add_argument("--num-images", type=int, default=D.num_images,
                   help=f"images in the attention / PCA pictures (default {D.num_images})")
    g.add_argument("--queries", default=None,
                   help="query points 'row,col;row,col' as fractions of the image "
                        "(default: centres of the largest labelled regions)")
    g.add_argument("--fraction", type=float, default=D.fraction,
                   help=f"share of patches shown per query (default {D.fraction})")
    g.add_argument("--sequence", default=None, help="video for the propagation picture")


def register(subparsers) -> None:
    """Add ``eval`` with sub-commands ``davis``, ``seg``, ``knn``, ``attention``, ``all``."""
    ev = subparsers.add_parser("eval", help="dense evaluations of a pre-trained backbone")
    sub = ev.add_subparsers(dest="eval_command", metavar="{davis,seg,knn,attention,all}")
    sub.required = True

    p = sub.add_parser("davis", help="DAVIS 2017 video segmentation by label propagation")
    _common(p)
    _davis(p)
    p.set_defaults(func=_handle_task, eval_task="davis")

    p = sub.add_parser("seg", help="semantic segmentation linear probe (mIoU, aAcc, mAcc)")
    _common(p)
    _seg(p)
    p.set_defaults(func=_handle_task, eval_task="seg")

    p = sub.add_parser("knn", help="weighted k-NN classification (top-1, top-5)")
    _common(p)
    _knn(p)
    p.set_defaults(func=_handle_task, eval_task="knn")

    p = sub.add_parser("attention", help="attention / PCA / propagation pictures")
    _common(p)
    p.add_argument("--seg-root", default=None, help="ADE20K-layout folder for the images")
    p.add_argument("--davis-root", default=None, help="DAVIS folder for the video picture")
    p.add_argument("--davis-results", default=None,
                   help="eval davis results folder to draw (else propagates one video)")
    _davis(p, root=False)
    _attention(p)
    p.set_defaults(func=_handle_task, eval_task="attention")

    p = sub.add_parser("all", help="run every evaluation and write report.md / report.json")
    _common(p, several=True)
    _davis(p)
    _seg(p)
    _knn(p)
    _attention(p)
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"comma-separated subset of {','.join(TASKS)}")
    p.add_argument("--reuse", action="store_true",
                   help="keep the results of checkpoints already in OUT/report.json (same "
                   "source, unchanged file, same settings and tasks); evaluate only the "
                   "others. Earlier checkpoints not named here stay in the report while their "
                   "files are unchanged")
    p.set_defaults(func=_handle_all)


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """Map parsed arguments onto :class:`EvalOptions` (absent options keep their defaults)."""
    opts = EvalOptions()
    for name in opts.to_dict():
        if hasattr(args, name):
            setattr(opts, name, getattr(args, name))
    if isinstance(opts.sequences, str):
        opts.sequences = [s for s in opts.sequences.split(",") if s]
    if isinstance(opts.queries, str):
        opts.queries = parse_queries(opts.queries)
    opts.validate()
    return opts


def _handle_task(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    task = args.eval_task
    device = resolve_device(opts.device)
    from selfpatch.models.loading import describe_source

    describe_source(args.checkpoint)  # fails early, with one line, on a missing checkpoint
    out = Path(args.out) if args.out else default_out_dir([args.checkpoint]) / task
    threads, threads_reason = apply_threads(opts.threads)
    backbone, precision = load_for_eval(args.checkpoint, device, opts.precision)
    print(f"selfpatch: {precision.describe()}; {threads} CPU threads ({threads_reason})")
    result = run_task(task, args.checkpoint, backbone, opts, out, device,
                      getattr(args, "davis_results", None))
    out.mkdir(parents=True, exist_ok=True)  # after the run: no empty folder on a data error
    path = out / f"{task}.json"
    path.write_text(json.dumps(json_safe(result), indent=2, default=str))
    metrics = summary_metrics({task: result})
    if metrics:
        print(" ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    print(f"results: {path}")
    return 0


def _handle_all(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    report = evaluate_all(args.checkpoint, args.out, opts, tasks, reuse=args.reuse)
    print(f"report: {report['report_md']}")
    return 0
