"""What to build (:class:`BuiltinSpec`) and what was built (:class:`BuiltinData`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from selfpatch.data.builtin.looks import LOOKS
from selfpatch.errors import SelfPatchError

#: The version built by default. Add a new version (never change an old one) whenever
#: generation changes what is written; ``BuiltinSpec(version=1)`` still builds v1.
VERSION = 2
NAME = "fashion-scenes"


#: Fields whose default differs from the dataclass default (v2's), per version.
_VERSION_DEFAULTS: dict[int, dict] = {1: {"max_objects": 5, "min_scale": 0.7, "max_scale": 2.5}}


@dataclass(frozen=True)
class BuiltinData:
    """Paths of a finished build of the built-in data set.

    Attributes:
        root: the build's own cache folder (holds ``manifest.json``).
        pretrain_dir: flat folder of pre-training scenes (JPEG).
        seg_root: ADE20K-layout root (``images/`` and ``annotations/``; 0 = background/ignore).
        davis_root: DAVIS-2017-layout root (``JPEGImages/``, ``Annotations/``, ``ImageSets/``).
        knn_root: ImageFolder root with ``train/`` and ``val/``.
        num_classes: semantic classes excluding background 0 (10).
        class_names: names of labels 1..num_classes, in order.
    """

    root: Path
    pretrain_dir: Path
    seg_root: Path
    davis_root: Path
    knn_root: Path
    num_classes: int
    class_names: tuple[str, ...]


@dataclass
class BuiltinSpec:
    """Sizes of the built-in data set. Changing any field gives a different build.

    Defaults (documented in docs/data.md): 20000 pre-training scenes of 96x96 with 1..3
    objects of 1.4..2.8x (v1: 1..5 of 0.7..2.5x); 800 + 200
    segmentation scenes (training from Fashion-MNIST train photos, validation from test
    photos); 30 clips of 25 frames of 128x128; 5000 + 1000 k-NN images of 64x64.
    ``version`` picks the rendering (:mod:`~selfpatch.data.builtin.looks`); use
    :meth:`for_version` to get another version's default sizes.
    """

    seed: int = 0
    version: int = VERSION
    scene_size: int = 96
    n_pretrain: int = 20000
    n_seg_train: int = 800
    n_seg_val: int = 200
    n_videos: int = 30
    video_frames: int = 25
    video_size: int = 128
    n_knn_train: int = 5000
    n_knn_val: int = 1000
    knn_size: int = 64
    min_objects: int = 1
    max_objects: int = 3  # v1: 5
    min_scale: float = 1.4  # v1: 0.7
    max_scale: float = 2.8  # v1: 2.5
    video_min_objects: int = 2
    video_max_objects: int = 4
    video_min_scale: float = 1.3
    video_max_scale: float = 2.3

    @classmethod
    def for_version(cls, version: int, **sizes) -> BuiltinSpec:
        """The default spec of data ``version`` (1 or 2), with ``sizes`` overriding fields."""
        if version not in LOOKS:
            raise SelfPatchError(
                f"data spec: version = {version} is unknown; known: "
                + ", ".join(str(v) for v in sorted(LOOKS))
            )
        return cls(**{**_VERSION_DEFAULTS.get(version, {}), **sizes, "version": version})

    def validate(self) -> None:
        """Raise :class:`SelfPatchError` naming the first field with an impossible value."""
        if self.version not in LOOKS:
            raise SelfPatchError(
                f"data spec: version = {self.version} is unknown; known: "
                + ", ".join(str(v) for v in sorted(LOOKS))
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "seed" and value < 0:
                raise SelfPatchError(f"data spec: {f.name} = {value} must not be negative")
        for name in ("scene_size", "video_size", "knn_size"):
            if getattr(self, name) < 16:
                raise SelfPatchError(f"data spec: {name} = {getattr(self, name)} must be >= 16")
        if self.video_frames < 1:
            raise SelfPatchError(f"data spec: video_frames = {self.video_frames} must be >= 1")
        if not 1 <= self.min_objects <= self.max_objects <= 255:
            raise SelfPatchError(
                f"data spec: need 1 <= min_objects ({self.min_objects}) <= max_objects "
                f"({self.max_objects}) <= 255"
            )
        if not 1 <= self.video_min_objects <= self.video_max_objects <= 255:
            raise SelfPatchError(
                f"data spec: need 1 <= video_min_objects ({self.video_min_objects}) <= "
                f"video_max_objects ({self.video_max_objects}) <= 255"
            )
        for lo, hi in (("min_scale", "max_scale"), ("video_min_scale", "video_max_scale")):
            if not 0 < getattr(self, lo) <= getattr(self, hi):
                raise SelfPatchError(f"data spec: need 0 < {lo} <= {hi}")
        if self.seed < 0:
            raise SelfPatchError(f"data spec: seed = {self.seed} must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    def dir_name(self) -> str:
        """Cache folder name: ``fashion-scenes-v2-seed0`` for the version's default sizes, with
        a short hash of the sizes appended otherwise (so a small test build never evicts the
        default).
        """
        name = f"{NAME}-v{self.version}-seed{self.seed}"
        skip = ("seed", "version")
        sizes = {k: v for k, v in self.to_dict().items() if k not in skip}
        default = asdict(BuiltinSpec.for_version(self.version))
        defaults = {k: v for k, v in default.items() if k not in skip}
        if sizes != defaults:
            digest = hashlib.sha256(json.dumps(sizes, sort_keys=True).encode()).hexdigest()
            name += f"-{digest[:8]}"
        return name
