"""How the built-in videos should look so that J&F rewards object-level features (issue 9).

    python benchmarks/video_design.py --out runs/video-design \\
        --checkpoint random:vit_tiny:16 \\
        --checkpoint runs/controls/supervised-vit.safetensors \\
        --checkpoint runs/my-dino-run [--variants v2 shared-tint]

On v2 every object of a clip has its own random tint, so label propagation from frame 0 can
follow colour alone: random weights score highest on J&F and a supervised ViT (features that
ignore colour) lowest (docs/results.md). Each candidate rendering here draws the same clips
(same seeds, objects, paths and backgrounds) and changes one thing; every checkpoint is then
scored with the DAVIS protocol (``selfpatch eval davis``'s code, built-in defaults) on each.
A rendering worth shipping ranks the controls the right way: supervised and pre-trained
checkpoints above random weights. Writes ``OUT/summary.md`` / ``.json`` with the rows of
*this call's* checkpoints and renderings only; each checkpoint's score per rendering is kept in
``OUT/<rendering>/results/<checkpoint>/score.json`` and reused by later calls, so naming an
already-scored checkpoint again costs nothing and puts it back in the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from controls import PixelTokens  # benchmarks/controls.py: the raw-pixel reference
from PIL import Image, ImageFilter

from selfpatch.data.builtin import layouts
from selfpatch.data.builtin.generate import item_rng, write_video
from selfpatch.data.builtin.looks import LOOKS
from selfpatch.data.builtin.render import Placement, Rendered, composite
from selfpatch.data.builtin.scenes import random_tint
from selfpatch.data.builtin.source import find_fashion_mnist
from selfpatch.data.builtin.spec import BuiltinSpec
from selfpatch.data.builtin.videos import Track, VideoLayout, sample_video
from selfpatch.runtime import apply_threads, cpu_name


@dataclasses.dataclass(frozen=True)
class DriftTrack(Track):
    """A track whose tint moves linearly (in RGB) to ``tint_end`` over the clip, as lighting
    or white balance drifts in real footage: colour stops being a stable identity cue."""

    tint_end: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def at(self, t: float) -> Placement:
        tint = tuple(a + (b - a) * t for a, b in zip(self.tint, self.tint_end))
        return dataclasses.replace(super().at(t), tint=tint)


def _tint_drift(layout: VideoLayout, index: int) -> VideoLayout:
    """Each object's tint drifts to a new random tint by the last frame (own generator, so
    the clip is otherwise the same)."""
    rng = np.random.default_rng([index, 7919])
    return dataclasses.replace(layout, tracks=tuple(
        DriftTrack(**{f.name: getattr(t, f.name) for f in dataclasses.fields(Track)},
                   tint_end=random_tint(rng, LOOKS[2])) for t in layout.tracks))


def _shared_tint(layout: VideoLayout, index: int = 0) -> VideoLayout:
    """Every object of the clip takes the first object's tint: colour cannot tell them apart."""
    tint = layout.tracks[0].tint
    return dataclasses.replace(
        layout, tracks=tuple(dataclasses.replace(t, tint=tint) for t in layout.tracks))


@dataclasses.dataclass(frozen=True)
class FlickerLayout(VideoLayout):
    """A clip filmed badly: every frame gets its own exposure gain, colour cast and focus blur
    (drawn from ``seed`` and the frame index), as real footage has; the masks are unchanged.
    Tracking by exact pixel values stops working; what the frames still share is shape."""

    seed: int = 0

    def render(self, photos: np.ndarray, frame: int, keep_alphas: bool = False) -> Rendered:
        rendered = super().render(photos, frame, keep_alphas)
        rng = np.random.default_rng([self.seed, frame, 104729])
        gain = rng.uniform(0.6, 1.4)
        cast = rng.normal(0.0, 0.08, size=3)
        rgb = np.clip(rendered.rgb * gain + cast, 0.0, 1.0)
        sigma = float(rng.uniform(0.0, 1.5))
        if sigma > 0.3:
            image = Image.fromarray((rgb * 255).round().astype(np.uint8))
            rgb = np.asarray(image.filter(ImageFilter.GaussianBlur(sigma)),
                             dtype=np.float32) / 255
        return dataclasses.replace(rendered, rgb=rgb.astype(np.float32))


def _flicker(layout: VideoLayout, index: int) -> VideoLayout:
    return FlickerLayout(**{f.name: getattr(layout, f.name)
                            for f in dataclasses.fields(VideoLayout)}, seed=index)


@functools.cache
def _test_labels() -> np.ndarray:
    return find_fashion_mnist(None).test_labels


@dataclasses.dataclass(frozen=True)
class ChangingLayout(VideoLayout):
    """Objects that change shape while keeping identity and class, as people and animals do
    in real footage: each object's photo cross-fades into another photo of the same class
    (``partners``; -1 = none) and/or turns in-plane by ``turns`` degrees over the clip (the
    photo is rotated inside its 28 x 28 frame, so far corners are cut). Masks follow the
    drawn object, as before. Matching exact appearance from frame 0 then degrades over the
    clip; features of the object's kind do not need to."""

    partners: tuple[int, ...] = ()
    turns: tuple[float, ...] = ()

    def render(self, photos: np.ndarray, frame: int, keep_alphas: bool = False) -> Rendered:
        t = self.time(frame)
        drawn, placements = [], []
        for k, track in enumerate(self.tracks):
            photo = photos[track.index].astype(np.float32)
            if self.partners and self.partners[k] >= 0:
                photo = (1 - t) * photo + t * photos[self.partners[k]].astype(np.float32)
            image = Image.fromarray(np.clip(photo.round(), 0, 255).astype(np.uint8))
            if self.turns:
                image = image.rotate(self.turns[k] * t, resample=Image.Resampling.BILINEAR)
            drawn.append(np.asarray(image))
            placements.append(dataclasses.replace(track.at(t), index=k))
        return composite(self.background_at(t), placements, np.stack(drawn), keep_alphas)


def _changing(layout: VideoLayout, index: int, morph: bool, turn: bool) -> VideoLayout:
    rng = np.random.default_rng([index, 15485863])
    labels = _test_labels()
    partners = tuple(int(rng.choice(np.flatnonzero(labels == t.label))) if morph else -1
                     for t in layout.tracks)
    turns = tuple(float(rng.choice([-1, 1]) * rng.uniform(60, 120)) if turn else 0.0
                  for t in layout.tracks)
    return ChangingLayout(**{f.name: getattr(layout, f.name)
                             for f in dataclasses.fields(VideoLayout)},
                          partners=partners, turns=turns)


def _fast(layout: VideoLayout, index: int = 0) -> VideoLayout:
    """The same paths covered in 9 frames instead of 25: 3x the motion per frame."""
    return dataclasses.replace(layout, frames=9)


#: Candidate renderings: name -> (change to the v2 clip, its description).
VARIANTS: dict[str, tuple[Callable[[VideoLayout, int], VideoLayout], str]] = {
    "v2": (lambda layout, index: layout, "v2 as shipped: one random tint per object"),
    "shared-tint": (_shared_tint, "one random tint per clip, shared by all its objects"),
    "tint-drift": (_tint_drift, "v2, each object's tint drifting to another random tint "
                   "over the clip"),
    "shared-drift": (lambda layout, index: _tint_drift(_shared_tint(layout), index),
                     "one tint per clip at frame 0, each object drifting to its own tint"),
    "fast": (_fast, "v2's paths in 9 frames instead of 25 (3x the motion per frame)"),
    "flicker": (_flicker, "v2, each frame with its own exposure gain (0.6-1.4), colour cast "
                "(sd 0.08) and focus blur (sigma 0-1.5 px)"),
    "fast-flicker": (lambda layout, index: _flicker(_fast(layout), index),
                     "both: 3x the motion per frame and per-frame exposure/cast/blur"),
    "shared-flicker": (lambda layout, index: _flicker(_shared_tint(layout), index),
                       "one tint per clip, and per-frame exposure/cast/blur as in `flicker`"),
    "morph": (lambda layout, index: _changing(layout, index, morph=True, turn=False),
              "v2, each object's photo cross-fading into another photo of its class"),
    "turn": (lambda layout, index: _changing(layout, index, morph=False, turn=True),
             "v2, each object turning in-plane by 60-120 degrees over the clip"),
    "morph-turn": (lambda layout, index: _changing(layout, index, morph=True, turn=True),
                   "both: cross-fade to another photo of the class and a 60-120 degree turn"),
    "shared-morph-turn": (
        lambda layout, index: _changing(_shared_tint(layout), index, morph=True, turn=True),
        "one tint per clip, and each object cross-fading and turning as in `morph-turn`"),
}


def draw_clip(spec: BuiltinSpec, rng: np.random.Generator, photos: np.ndarray,
              labels: np.ndarray) -> VideoLayout:
    """One clip drawn with ``spec``'s video sizes and look from ``photos`` / ``labels``."""
    return sample_video(
        rng, photos, labels, size=spec.video_size, frames=spec.video_frames,
        n_objects=(spec.video_min_objects, spec.video_max_objects),
        scale=(spec.video_min_scale, spec.video_max_scale), look=LOOKS[spec.version])


def build_videos(out: Path, change: Callable[[VideoLayout, int], VideoLayout], seed: int = 0,
                 n_videos: int = 30) -> Path:
    """The built-in clips (v2 sizes and seeds) with ``change`` applied; returns the DAVIS root."""
    spec = BuiltinSpec(seed=seed, n_videos=n_videos)
    root = out / layouts.DAVIS
    if (root / "ImageSets" / "2017" / "val.txt").exists():
        return root
    fm = find_fashion_mnist(None)
    sequences = []
    for index in range(spec.n_videos):
        layout = change(draw_clip(spec, item_rng(spec.seed, "davis", index), fm.test_images,
                                  fm.test_labels), index)
        sequence = layouts.davis_sequence(index)
        write_video(out, sequence, layout, fm.test_images)
        sequences.append(sequence)
    lists = root / "ImageSets" / "2017"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "val.txt").write_text("".join(f"{s}\n" for s in sequences))
    return root


#: Mask-only references (no features): what J&F gives with no tracking at all, and with
#: perfect tracking at the protocol's patch grid. They bracket what any backbone can score.
MASK_REFERENCES = {
    "first-mask": "every frame predicted as frame 0's annotation (no tracking)",
    "grid-oracle": "every frame's own annotation taken to the patch grid as the protocol "
                   "takes frame 0's (nearest) and read out by the protocol: perfect tracking "
                   "of the protocol's own patch labels",
    "grid-oracle-area": "the same with each patch holding the area fraction of every label "
                        "(the most a soft patch label can say)",
}


def mask_reference_predictions(kind: str, gt: np.ndarray, patch: int,
                               short_side: int | None) -> np.ndarray:
    """``(T, H, W)`` predicted ids of a mask-only reference for one clip's ground truth ``gt``.

    ``first-mask`` repeats frame 0's annotation. ``grid-oracle`` takes each frame's own
    annotation down to the patch grid the backbone would see (nearest, as frame 0's labels
    are) and back up with the protocol's read-out (``soft_to_labels``), so its only error is
    the grid's resolution. ``grid-oracle-area`` gives each patch the fraction of its area
    under every label instead (a tracker's top-k average can hold such soft labels).
    """
    from selfpatch.evaluate.davis import labels_to_onehot, propagation_size, soft_to_labels
    from selfpatch.evaluate.jf import VOID_LABEL

    ids = np.where(gt == VOID_LABEL, 0, gt).astype(np.uint8)
    if kind == "first-mask":
        return np.repeat(ids[:1], len(ids), axis=0)
    if kind not in MASK_REFERENCES:
        raise ValueError(f"unknown mask reference {kind!r}; choose from {sorted(MASK_REFERENCES)}")
    height, width = ids.shape[1:]
    th, tw = propagation_size(height, width, patch, short_side)
    grid = (th // patch, tw // patch)
    num_labels = int(ids.max()) + 1
    if kind == "grid-oracle":
        soft = [labels_to_onehot(frame, grid, num_labels) for frame in ids]
    else:  # area fractions: box-average the full-resolution one-hot over each patch's cell
        onehot = F.one_hot(torch.from_numpy(ids.astype(np.int64)), num_labels)
        soft = F.adaptive_avg_pool2d(onehot.permute(0, 3, 1, 2).float(), grid)
    return np.stack([soft_to_labels(s, patch, (height, width)) for s in soft])


def score_mask_reference(kind: str, root: Path, patch: int, short_side: int | None) -> float:
    """J&F-Mean (percent) of a mask-only reference over the ``val`` clips under ``root``."""
    from selfpatch.evaluate.davis import list_davis_sequences, read_annotations
    from selfpatch.evaluate.jf import DavisScores, sequence_scores

    scores = DavisScores()
    for seq in list_davis_sequences(root, "val"):
        gt = read_annotations(seq)
        j, f = sequence_scores(gt, mask_reference_predictions(kind, gt, patch, short_side))
        scores.add_sequence(seq.name, j, f)
    return 100 * scores.global_results()["J&F-Mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/video-design"))
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a `selfpatch eval` source, pixels:P for raw-pixel tokens of "
                        "P x P patches (appearance alone, a reference), or a mask-only "
                        "reference: first-mask, grid-oracle[:P], grid-oracle-area[:P] (P = "
                        "patch, default 16)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0,
                        help="data seed of the clips (as `selfpatch data build --seed`): "
                        "0 is build 0's clips, 1-4 the held-out builds'")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    apply_threads(args.threads)
    from selfpatch.evaluate.davis import evaluate_davis
    from selfpatch.evaluate.options import EvalOptions
    from selfpatch.models.loading import load_backbone

    rows: dict[str, dict[str, float]] = {}
    for variant in args.variants:
        change, _ = VARIANTS[variant]
        root = build_videos(args.out / variant, change, seed=args.seed)
        for source in args.checkpoint:
            tag = source.replace("/", "_").replace(":", "_")
            done = args.out / variant / "results" / tag / "score.json"
            if done.exists():  # scored in an earlier call: reuse
                rows.setdefault(source, {})[variant] = json.loads(done.read_text())["J&F"]
                continue
            if source.split(":")[0] in MASK_REFERENCES:
                patch = int(source.split(":")[1]) if ":" in source else 16
                settings = EvalOptions().propagation(builtin=True, patch_size=patch)
                rows.setdefault(source, {})[variant] = score_mask_reference(
                    source.split(":")[0], root, patch, settings.short_side)
                done.parent.mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps({"J&F": rows[source][variant]}))
                print(f"{variant:12s} {source}: J&F {rows[source][variant]:.1f}", flush=True)
                continue
            backbone = (PixelTokens(int(source.split(":")[1])) if source.startswith("pixels:")
                        else load_backbone(source, "cpu").eval())
            start = time.perf_counter()
            # the built-in defaults of `selfpatch eval davis` (frames upscaled to a 16x16 grid)
            settings = EvalOptions().propagation(builtin=True, patch_size=backbone.patch_size)
            result = evaluate_davis(backbone, root, args.out / variant / "results" / tag,
                                    settings=settings, log=None)
            rows.setdefault(source, {})[variant] = 100 * result["global"]["J&F-Mean"]
            done.write_text(json.dumps({"J&F": rows[source][variant]}))
            print(f"{variant:12s} {source}: J&F {rows[source][variant]:.1f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    header = "| checkpoint | " + " | ".join(f"J&F {v}" for v in args.variants) + " |"
    lines = [f"# Video design: J&F per rendering (clips of data seed {args.seed}; "
             f"{cpu_name()}, {time.strftime('%Y-%m-%d')})", "",
             *(f"- `{v}`: {VARIANTS[v][1]}" for v in args.variants), "", header,
             "|---|" + "---:|" * len(args.variants)]
    lines += [f"| `{s}` | " + " | ".join(f"{rows[s][v]:.1f}" for v in args.variants) + " |"
              for s in args.checkpoint]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
