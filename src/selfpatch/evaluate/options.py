"""Settings of an evaluation run, shared by the CLI, ``eval all`` and Python callers.

One flat dataclass so that ``selfpatch eval <task>`` and ``selfpatch eval all`` accept the same
options and a Python user can write ``EvalOptions(device="cpu", seg_epochs=5)``. ``None`` means
"choose for the data": native sizes for the built-in set, the published protocol settings
(480 px DAVIS frames, 512 px ADE20K images, 224 px centre-cropped k-NN images, 150 ADE20K
classes) for real data sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.datasets import ADE20K_NUM_CLASSES, DataChoice, choose_data
from selfpatch.evaluate.davis import PropagationSettings
from selfpatch.evaluate.seg import FEATURE_DTYPES, ProbeSettings
from selfpatch.runtime import PRECISIONS

#: Every task of ``eval all``, in the order they run (attention reuses the DAVIS results).
TASKS = ("davis", "seg", "knn", "attention")

#: Protocol sizes used for real data sets when the option is left at None.
REAL_DAVIS_SHORT_SIDE = 480
REAL_SEG_IMAGE_SIZE = 512
REAL_KNN_IMAGE_SIZE = 224


@dataclass
class EvalOptions:
    """All evaluation settings (see ``docs/evaluation.md``)."""

    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 of the backbone (selfpatch.runtime)
    threads: int = 0  # torch CPU threads; 0 = one per usable core (selfpatch.runtime)
    batch_size: int = 32
    data_root: str | None = None
    builtin_version: int = 2  # built-in data version used when no real data is given
    davis_root: str | None = None
    seg_root: str | None = None
    knn_root: str | None = None
    # DAVIS label propagation (DINO defaults)
    split: str = "val"
    sequences: list[str] | None = None
    short_side: int | None = None  # None: native for built-in, 480 for real; 0: native
    n_last_frames: int = PropagationSettings.n_last_frames
    size_mask_neighborhood: int = PropagationSettings.size_mask_neighborhood
    topk: int = PropagationSettings.topk
    davis_temperature: float = PropagationSettings.temperature
    # segmentation probe
    num_classes: int | None = None
    seg_image_size: int | None = None
    seg_epochs: int = ProbeSettings.epochs
    seg_lr: float = ProbeSettings.lr
    seg_batch_size: int = ProbeSettings.batch_size
    seg_seed: int = ProbeSettings.seed
    seg_feature_dtype: str = ProbeSettings.feature_dtype  # cache storage: float32|float16|bfloat16
    reduce_zero_label: bool = True
    train_limit: int = 0
    val_limit: int = 0
    # k-NN
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_image_size: int | None = None
    center_crop: bool | None = None  # None: for real data sets only
    # pictures
    num_images: int = 4
    queries: list[tuple[float, float]] | None = None
    fraction: float = 0.1
    sequence: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise :class:`SelfPatchError` naming the first option out of its range."""
        checks = [
            ("--precision", self.precision, self.precision in PRECISIONS,
             f"one of {', '.join(PRECISIONS)}"),
            ("--threads", self.threads, self.threads >= 0, "0 (automatic) or more"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "at least 1"),
            ("--n-last-frames", self.n_last_frames, self.n_last_frames >= 0, "at least 0"),
            ("--size-mask-neighborhood", self.size_mask_neighborhood,
             self.size_mask_neighborhood >= 0, "at least 0"),
            ("--topk", self.topk, self.topk >= 1, "at least 1"),
            ("--davis-temperature", self.davis_temperature, self.davis_temperature > 0,
             "positive"),
            ("--short-side", self.short_side, self.short_side is None or self.short_side >= 0,
             "0 (native) or a size in pixels"),
            ("--seg-epochs", self.seg_epochs, self.seg_epochs >= 1, "at least 1"),
            ("--seg-lr", self.seg_lr, self.seg_lr > 0, "positive"),
            ("--seg-batch-size", self.seg_batch_size, self.seg_batch_size >= 1, "at least 1"),
            ("--seg-feature-dtype", self.seg_feature_dtype,
             self.seg_feature_dtype in FEATURE_DTYPES, f"one of {', '.join(FEATURE_DTYPES)}"),
            ("--num-classes", self.num_classes, self.num_classes is None or self.num_classes >= 1,
             "at least 1"),
            ("--knn-k", self.knn_k, self.knn_k >= 1, "at least 1"),
            ("--builtin-version", self.builtin_version, self.builtin_version in (1, 2),
             "1 or 2"),
            ("--knn-temperature", self.knn_temperature, self.knn_temperature > 0, "positive"),
            ("--num-images", self.num_images, self.num_images >= 1, "at least 1"),
            ("--fraction", self.fraction, 0 < self.fraction <= 1, "in (0, 1]"),
        ]
        for flag, value, ok, what in checks:
            if not ok:
                raise SelfPatchError(f"{flag} must be {what}, got {value}")

    def data(self, task: str) -> DataChoice:
        """The data set of ``davis`` / ``seg`` / ``knn`` under these options."""
        explicit = {"davis": self.davis_root, "seg": self.seg_root, "knn": self.knn_root}[task]
        return choose_data(task, explicit, self.data_root, self.builtin_version)

    def propagation(self, builtin: bool, patch_size: int = 8) -> PropagationSettings:
        """Propagation settings, with the frame size resolved for the data set kind.

        Built-in data is sized for patch 8 (a 16x16 grid on 128 px frames); larger patches
        evaluate it upscaled to the same grid, as DINO upscales DAVIS to 480 px.
        """
        short = self.short_side
        if short is None:
            short = builtin_size("video_size", patch_size) if builtin else REAL_DAVIS_SHORT_SIDE
        elif short == 0:
            short = None
        return PropagationSettings(n_last_frames=self.n_last_frames,
                                   size_mask_neighborhood=self.size_mask_neighborhood,
                                   topk=self.topk,
                                   temperature=self.davis_temperature, short_side=short)

    def probe(self, builtin: bool, patch_size: int = 8) -> ProbeSettings:
        """Probe settings, with the image size resolved for the data set kind."""
        size = self.seg_image_size or (builtin_size("scene_size", patch_size) if builtin
                                       else REAL_SEG_IMAGE_SIZE)
        return ProbeSettings(epochs=self.seg_epochs, lr=self.seg_lr,
                             batch_size=self.seg_batch_size, seed=self.seg_seed,
                             reduce_zero_label=self.reduce_zero_label, image_size=size,
                             feature_dtype=self.seg_feature_dtype)

    def seg_classes(self, choice: DataChoice) -> int:
        """Class count: ``num_classes``, else the built-in set's, else ADE20K's 150."""
        return self.num_classes or choice.num_classes or ADE20K_NUM_CLASSES

    def knn_geometry(self, builtin: bool, patch_size: int = 8) -> tuple[int | None, bool]:
        """``(image_size, center_crop)`` for k-NN on the built-in or a real data set."""
        size = self.knn_image_size or (builtin_size("knn_size", patch_size) if builtin
                                       else REAL_KNN_IMAGE_SIZE)
        crop = (not builtin) if self.center_crop is None else self.center_crop
        return size, crop


def builtin_size(field: str, patch_size: int) -> int | None:
    """Evaluation size for the built-in data: native (``None``) for patch 8, else upscaled by
    ``patch_size / 8`` so every backbone sees the same patch grid."""
    if patch_size <= 8:
        return None
    from selfpatch.data.builtin import BuiltinSpec

    return int(getattr(BuiltinSpec(), field) * patch_size // 8)
