"""``eval all``: run every protocol on one or more checkpoints and write one report.

Output layout (``<out>`` defaults to ``<run>/eval`` for a single run directory, else
``runs/eval-<timestamp>``)::

    <out>/report.md, report.json          side-by-side table, settings, configs, pictures
    <out>/<label>/davis/<seq>/00000.png   DAVIS results folder (palette PNGs)
    <out>/<label>/davis/global_results-val.csv, per-sequence_results-val.csv
    <out>/<label>/pictures/attention.png, pca.png, propagation.png

All metrics in the report are percentages (J&F, J, F scaled by 100 like the paper's tables;
the DAVIS CSV files keep the official 0..1 scale).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import time
from pathlib import Path

import torch

from selfpatch.config import flatten_dict
from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.attention import evaluate_attention
from selfpatch.evaluate.davis import evaluate_davis
from selfpatch.evaluate.knn import evaluate_knn
from selfpatch.evaluate.options import TASKS, EvalOptions
from selfpatch.evaluate.seg import evaluate_seg
from selfpatch.models.backbone import ViTBackbone
from selfpatch.runtime import (
    PrecisionChoice,
    apply_threads,
    cpu_name,
    resolve_device,
    resolve_precision,
)

#: Report table columns: (key in the metrics dict, header).
COLUMNS = (("J&F", "J&F"), ("J", "J"), ("F", "F"), ("mIoU", "mIoU"), ("aAcc", "aAcc"),
           ("mAcc", "mAcc"), ("knn_top1", "k-NN top-1"), ("knn_top5", "k-NN top-5"))
#: Extra DAVIS statistics kept in report.json.
DAVIS_EXTRA = ("J-Recall", "J-Decay", "F-Recall", "F-Decay")


def default_out_dir(sources: list[str]) -> Path:
    """``<run>/eval`` for one run directory, else ``runs/eval-<timestamp>``."""
    if len(sources) == 1 and Path(sources[0]).is_dir():
        return Path(sources[0]) / "eval"
    return Path("runs") / f"eval-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def source_label(source: str) -> str:
    """Short, file-system-safe name of a checkpoint for folders and table rows."""
    path = Path(source)
    if source.startswith("random:"):
        text = source.replace(":", "-")
    elif path.is_dir():
        text = path.resolve().name
    elif path.parent.name in ("checkpoints", "models"):  # models/: `finetune`'s kept files
        text = f"{path.parent.parent.name}-{path.stem}"
    else:
        text = path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "checkpoint"


def unique_labels(sources: list[str]) -> list[str]:
    """:func:`source_label` of each source, with ``-2``, ``-3`` ... appended to repeats."""
    labels: list[str] = []
    for s in sources:
        base, label, n = source_label(s), source_label(s), 1
        while label in labels:
            n += 1
            label = f"{base}-{n}"
        labels.append(label)
    return labels


def load_for_eval(source: str, device: torch.device, precision: str = "auto"
                  ) -> tuple[ViTBackbone, PrecisionChoice]:
    """The frozen backbone, set to compute its features in the resolved ``precision``."""
    from selfpatch.models.loading import load_backbone

    backbone = load_backbone(source, device=device)
    choice = resolve_precision(precision, device, backbone.embed_dim)
    backbone.inference_dtype = choice.dtype
    return backbone, choice


def run_task(task: str, source: str, backbone, opts: EvalOptions, task_dir: Path,
             device: torch.device, davis_results: str | None = None, log=print) -> dict:
    """Run one protocol for one checkpoint; returns the protocol's result dict.

    ``task_dir`` receives the task's files: the DAVIS results folder (``davis``) or the
    pictures (``attention``); ``seg`` and ``knn`` write nothing. ``davis_results`` is a DAVIS
    results folder for the propagation picture.
    """
    if task == "davis":
        data = opts.data("davis")
        return evaluate_davis(backbone, data.root, task_dir, opts.split,
                              opts.propagation(data.builtin, backbone.patch_size), device,
                              opts.batch_size,
                              opts.sequences, log)
    if task == "seg":
        data = opts.data("seg")
        return evaluate_seg(backbone, data.root, opts.seg_classes(data),
                            opts.probe(data.builtin, backbone.patch_size),
                            device, opts.batch_size, opts.train_limit, opts.val_limit,
                            data.class_names if opts.num_classes in (None, data.num_classes)
                            else None, log)
    if task == "knn":
        data = opts.data("knn")
        size, crop = opts.knn_geometry(data.builtin, backbone.patch_size)
        from selfpatch.models.loading import load_image_embedder

        embed = load_image_embedder(source, device, backbone=backbone)
        return evaluate_knn(backbone, data.root, opts.knn_k, opts.knn_temperature, size, crop,
                            device, opts.batch_size, embed=embed,
                            embed_name=f"the method's image representation ({embed.kind})",
                            log=log)
    if task == "attention":
        seg, davis = opts.data("seg"), opts.data("davis")
        return evaluate_attention(backbone, task_dir, seg.root, davis.root,
                                  opts.split, opts.sequence, davis_results, opts.num_images,
                                  opts.queries, opts.fraction,
                                  opts.propagation(davis.builtin, backbone.patch_size),
                                  device, opts.batch_size, log)
    raise SelfPatchError(f"unknown evaluation {task!r}; choose one of {', '.join(TASKS)}")


def summary_metrics(results: dict) -> dict[str, float]:
    """The report's flat metric dict (percent) from the per-task results."""
    out: dict[str, float] = {}
    if "davis" in results:
        g = results["davis"]["global"]
        out.update({"J&F": 100 * g["J&F-Mean"], "J": 100 * g["J-Mean"], "F": 100 * g["F-Mean"]})
        out.update({k: 100 * g[k] for k in DAVIS_EXTRA})
    if "seg" in results:
        out.update({k: results["seg"][k] for k in ("mIoU", "aAcc", "mAcc")})
    if "knn" in results:
        out.update({"knn_top1": results["knn"]["top1"], "knn_top5": results["knn"]["top5"]})
    return out


#: Options that change how fast an evaluation runs, not what it measures.
SPEED_ONLY_OPTIONS = ("threads",)


def source_fingerprint(source: str) -> dict:
    """What identifies a checkpoint's weights for reuse: the resolved file with its size and
    modification time (a re-trained or resumed run changes both), or the ``random:`` name."""
    text = str(source)
    if text.startswith("random:"):
        return {"source": text}
    from selfpatch.checkpoint import resolve_checkpoint_path

    path = resolve_checkpoint_path(text).resolve()
    stat = path.stat()
    return {"file": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _comparable_options(options: dict) -> dict:
    return {k: v for k, v in json_safe(options).items() if k not in SPEED_ONLY_OPTIONS}


def reusable_entries(report_path: Path, opts: EvalOptions, tasks: tuple[str, ...]
                     ) -> dict[tuple[str, str], dict]:
    """Entries of an earlier ``report.json`` that can stand for a new evaluation, keyed by
    ``(source, label)``: same tasks, same settings (``--threads`` aside) and an entry that
    recorded its checkpoint's fingerprint. Empty when the file is missing or unreadable."""
    try:
        old = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return {}
    # An option added after the old report was written counts as its default there.
    old_options = {**EvalOptions().to_dict(), **old.get("options", {})}
    if old.get("tasks") != list(tasks) or \
            _comparable_options(old_options) != _comparable_options(opts.to_dict()):
        return {}
    return {(e["source"], e["label"]): e for e in old.get("checkpoints", [])
            if "fingerprint" in e}


def merge_earlier(earlier: dict[tuple[str, str], dict], entries: list[dict], log=print
                  ) -> list[dict]:
    """The report's checkpoints after a ``--reuse`` call: the earlier entries (from
    :func:`reusable_entries`) in their old order, each replaced by this call's entry of the same
    source or label; then this call's other entries. An earlier entry not named in this call is
    kept only while its file is unchanged (its fingerprint still matches); otherwise it is
    dropped, with a log line, rather than reported for weights that no longer exist."""
    current = {e["label"]: e for e in entries}
    by_source = {e["source"]: e for e in entries}
    merged, placed = [], set()
    for (source, label), old in earlier.items():
        new = by_source.get(source) or current.get(label)
        if new is not None:
            if new["label"] not in placed:
                merged.append(new)
                placed.add(new["label"])
            continue
        try:
            unchanged = source_fingerprint(source) == old["fingerprint"]
        except (OSError, SelfPatchError):
            unchanged = False
        if unchanged:
            if log:
                log(f"[{label}] kept from the earlier report (not named in this call)")
            merged.append(old)
        elif log:
            log(f"[{label}] dropped from the earlier report: {source} is missing or changed")
    return merged + [e for e in entries if e["label"] not in placed]


def evaluate_all(sources: list[str], out_dir: str | Path | None = None,
                 opts: EvalOptions | None = None, tasks: tuple[str, ...] = TASKS,
                 log=print, reuse: bool = False) -> dict:
    """Evaluate every checkpoint on ``tasks`` and write ``report.md`` / ``report.json``.

    Args:
        sources: run directories, ``.pt`` checkpoints, ``.safetensors`` exports or
            ``random:ARCH[:PATCH]``.
        out_dir: report folder (:func:`default_out_dir` when None).
        opts: settings (defaults when None).
        tasks: subset of :data:`TASKS`.
        reuse: keep the results of checkpoints already in ``out_dir/report.json`` whose
            file is unchanged and whose settings and tasks are the same, and evaluate only
            the others (a grid finished over several sittings re-scores only its new runs).
            Earlier checkpoints not named in ``sources`` stay in the report, in their old
            order, as long as their files are unchanged (a call with a subset of a grid adds
            to the report instead of replacing it); the new ones follow.

    Returns:
        The report dict (also written as ``report.json``), with ``"report_md"`` set.
    """
    opts = opts or EvalOptions()
    opts.validate()
    if not sources:
        raise SelfPatchError("eval all needs at least one --checkpoint")
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise SelfPatchError(f"unknown evaluation {bad[0]!r} in --tasks; choose from "
                             f"{', '.join(TASKS)}")
    device = resolve_device(opts.device)
    from selfpatch.models.loading import describe_source

    # Check every source and data root first, so that a typo fails before minutes of work.
    described = [describe_source(s) for s in sources]
    for task in tasks:
        for data_task in (("seg", "davis") if task == "attention" else (task,)):
            opts.data(data_task)
    out_dir = Path(out_dir) if out_dir else default_out_dir(sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads, threads_reason = apply_threads(opts.threads)
    earlier = reusable_entries(out_dir / "report.json", opts, tasks) if reuse else {}
    entries = []
    for source, label, desc in zip(sources, unique_labels(sources), described):
        fingerprint = source_fingerprint(source)
        old = earlier.get((source, label))
        if old is not None and old["fingerprint"] == fingerprint:
            if log:
                log(f"[{label}] unchanged since the earlier report: results reused")
            entries.append(old)
            continue
        start = time.perf_counter()
        backbone, precision = load_for_eval(source, device, opts.precision)
        if log:
            log(f"[{label}] {precision.describe()}; {threads} CPU threads ({threads_reason})")
        ck_dir = out_dir / label
        results: dict = {}
        for task in tasks:
            if log:
                log(f"[{label}] eval {task}")
            davis_results = results.get("davis", {}).get("results_dir")
            task_dir = ck_dir / ("pictures" if task == "attention" else task)
            results[task] = run_task(task, source, backbone, opts, task_dir, device,
                                     davis_results, log)
        entries.append({
            "label": label,
            "source": source,
            "fingerprint": fingerprint,
            "description": desc,
            "backbone": {"timm_name": backbone.spec.timm_name, "patch_size": backbone.patch_size,
                         "embed_dim": backbone.embed_dim},
            "precision": precision.to_dict(),
            "metrics": summary_metrics(results),
            "results": results,
            "seconds": time.perf_counter() - start,
        })
    if reuse:
        entries = merge_earlier(earlier, entries, log)
    report = {
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "device": str(device),
        "cpu": cpu_name(),
        "threads": threads,
        "torch": torch.__version__,
        "tasks": list(tasks),
        "options": opts.to_dict(),
        "checkpoints": entries,
    }
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    report["report_md"] = str(md_path)
    json_path.write_text(json.dumps(json_safe(report), indent=2))
    md_path.write_text(render_markdown(report, out_dir))
    return report


def json_safe(obj):
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.1f}"


#: Training-config keys always shown in the report's config table (when present).
CONFIG_KEYS = ("method", "model.arch", "model.patch_size", "selfpatch.neighbourhood",
               "selfpatch.border", "selfpatch.k", "selfpatch.aggregation",
               "selfpatch.loss_weight", "data.path", "data.global_size", "optim.epochs",
               "optim.batch_size", "optim.base_lr")


def config_table(entries: list[dict]) -> list[str]:
    """Markdown table of each checkpoint's training config: step, epoch, the keys of
    :data:`CONFIG_KEYS`, and every other key whose value differs between checkpoints (the
    full configs are in report.json)."""
    configs = [{"step": e["description"].get("step"), "epoch": e["description"].get("epoch"),
                **flatten_dict(e["description"].get("config") or {})} for e in entries]
    if not any(v is not None for c in configs for v in c.values()):
        return ["No training config (random or exported weights)."]
    keys = ["step", "epoch"] + [k for k in CONFIG_KEYS if any(k in c for c in configs)]
    every = sorted({k for c in configs for k in c} - set(keys))
    keys += [k for k in every if len({repr(c.get(k)) for c in configs}) > 1]
    lines = ["| config | " + " | ".join(e["label"] for e in entries) + " |",
             "|---|" + "---|" * len(entries)]
    for k in keys:
        cells = ["—" if c.get(k) is None else str(c[k]).replace("|", "/") for c in configs]
        lines.append(f"| `{k}` | " + " | ".join(cells) + " |")
    return lines


def render_markdown(report: dict, out_dir: Path) -> str:
    """``report.md``: results table, protocol settings, checkpoint configs, pictures, timings."""
    entries = report["checkpoints"]
    lines = ["# selfpatch evaluation report", "",
             f"Created {report['created']} on {report['device']} ({report['cpu']}, "
             f"{report['threads']} CPU threads; torch {report['torch']}). "
             "All numbers are percentages.", "", "## Results", ""]
    lines.append("| checkpoint | " + " | ".join(h for _, h in COLUMNS) + " |")
    lines.append("|---|" + "---:|" * len(COLUMNS))
    for e in entries:
        lines.append(f"| {e['label']} | "
                     + " | ".join(_fmt(e["metrics"].get(k)) for k, _ in COLUMNS) + " |")
    lines.append("")
    davis_rows = [e for e in entries if "J" in e["metrics"]]
    if davis_rows:
        lines.append("DAVIS recall / decay: " + "; ".join(
            f"{e['label']}: " + ", ".join(f"{k} {_fmt(e['metrics'][k])}" for k in DAVIS_EXTRA)
            for e in davis_rows))
        lines.append("")
    lines += ["## Protocols", ""]
    first = entries[0]["results"]
    if "davis" in first:
        s = first["davis"]["settings"]
        lines.append(
            f"- **DAVIS label propagation** ({s['root']}, split {s['split']}, "
            f"{first['davis']['num_sequences']} videos, {first['davis']['num_frames']} frames): "
            f"{s['features']}; context = first frame + {s['n_last_frames']} previous, "
            f"window {s['size_mask_neighborhood']} patches, top-{s['topk']}, "
            f"temperature {s['temperature']}, "
            f"short side {s['short_side'] or 'native'}; J/F as davis2017-evaluation "
            f"(bound_th {s['bound_th']}, frames 1..T-2).")
    if "seg" in first:
        s = first["seg"]["settings"]
        lines.append(
            f"- **Segmentation linear probe** ({s['root']}, {first['seg']['num_train']} train / "
            f"{first['seg']['num_val']} val images, {s['num_classes']} classes, "
            f"{s['image_size']} px): {s['probe']}, {s['optimizer']} lr {s['lr']}, "
            f"{s['epochs']} epochs, batch {s['batch_size']}, seed {s['seed']}, "
            f"reduce_zero_label {s['reduce_zero_label']}, features cached as "
            f"{s.get('feature_dtype', 'float32')}; {s['upsampling']}; "
            "mIoU/aAcc/mAcc from one confusion matrix.")
    if "knn" in first:
        s = first["knn"]["settings"]
        lines.append(
            f"- **k-NN** ({s['root']}, {first['knn']['num_train']} train / "
            f"{first['knn']['num_val']} val images, {first['knn']['num_classes']} classes, "
            f"{s['image_size']} px{', centre crop' if s['center_crop'] else ''}): "
            f"k={s['k']}, T={s['temperature']}, {s['weighting']} votes on L2-normalised "
            f"embeddings: {s['embedding']}.")
    if "attention" in first:
        s = first["attention"]["settings"]
        lines.append(f"- **Pictures**: {s['attention']}, top {s['fraction']:.0%} of patches per "
                     f"query, queries {s['queries']}; PCA: 3 components over all shown images.")
    lines += ["", "## Checkpoints", ""]
    for e in entries:
        desc = e["description"]
        per_task = ", ".join(f"{t} {r['seconds']:.0f} s" for t, r in e["results"].items()
                             if r.get("seconds") is not None)
        lines.append(f"- **{e['label']}**: `{desc.get('source', e['source'])}`; "
                     f"{e['backbone']['timm_name']}, patch {e['backbone']['patch_size']}, "
                     f"dim {e['backbone']['embed_dim']}; features in "
                     f"{e['precision']['name']} ({e['precision']['reason']}); "
                     f"evaluated in {e['seconds']:.1f} s "
                     f"({per_task})")
    lines += [""] + config_table(entries) + [""]
    pictures = [(e["label"], name, Path(p)) for e in entries
                for name, p in e["results"].get("attention", {}).get("pictures", {}).items()]
    if pictures:
        lines += ["## Pictures", ""]
        for label, name, path in pictures:
            rel = path.relative_to(out_dir) if path.is_relative_to(out_dir) else path
            lines += [f"**{label}: {name}**", "", f"![{label} {name}]({rel.as_posix()})", ""]
    if any("seg" in e["results"] for e in entries):
        lines += ["## Per-class IoU (segmentation probe)", ""]
        seg_entries = [e for e in entries if "seg" in e["results"]]
        lines.append("| class | " + " | ".join(e["label"] for e in seg_entries) + " |")
        lines.append("|---|" + "---:|" * len(seg_entries))
        for i, row in enumerate(seg_entries[0]["results"]["seg"]["per_class"]):
            values = [e["results"]["seg"]["per_class"][i]["IoU"] for e in seg_entries]
            if all(not math.isfinite(v) for v in values):
                continue  # a class absent from GT and predictions (e.g. most of ADE's 150)
            lines.append(f"| {row['class']} | " + " | ".join(_fmt(v) for v in values) + " |")
        lines.append("")
    if any("davis" in e["results"] for e in entries):
        lines += ["## DAVIS files", ""]
        for e in entries:
            if "davis" in e["results"]:
                csvs = e["results"]["davis"]["csv"]
                rel = [Path(p).relative_to(out_dir).as_posix() if Path(p).is_relative_to(out_dir)
                       else p for p in (csvs["global"], csvs["per_sequence"])]
                lines.append(f"- {e['label']}: [{Path(rel[0]).name}]({rel[0]}), "
                             f"[{Path(rel[1]).name}]({rel[1]})")
        lines.append("")
    return "\n".join(lines)
