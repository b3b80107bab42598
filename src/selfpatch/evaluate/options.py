"""Settings of an evaluation run, shared by the CLI, ``eval all`` and Python callers.

One flat dataclass so that ``selfpatch eval <task>`` and ``selfpatch eval all`` accept the same
options and a Python user can write ``EvalOptions(device="cpu", seg_epochs=5)``. ``None`` means
"choose for the data": native sizes for the built-in set, the published protocol settings
(480 px DAVIS frames, 512 px ADE20K images, 224 px centre-cropped k-NN images, 150 ADE20K
classes) for real data sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from selfpatch.evaluate.datasets import ADE20K_NUM_CLASSES, DataChoice, choose_data
from selfpatch.evaluate.davis import PropagationSettings
from selfpatch.evaluate.seg import ProbeSettings

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
    batch_size: int = 32
    data_root: str | None = None
    davis_root: str | None = None
    seg_root: str | None = None
    knn_root: str | None = None
    # DAVIS label propagation (DINO defaults)
    split: str = "val"
    sequences: list[str] | None = None
    short_side: int | None = None  # None: native for built-in, 480 for real; 0: native
    n_last_frames: int = 7
    size_mask_neighborhood: int = 12
    topk: int = 5
    davis_temperature: float = 0.1
    # segmentation probe
    num_classes: int | None = None
    seg_image_size: int | None = None
    seg_epochs: int = 20
    seg_lr: float = 5e-3
    seg_batch_size: int = 32
    seg_seed: int = 0
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

    def data(self, task: str) -> DataChoice:
        """The data set of ``davis`` / ``seg`` / ``knn`` under these options."""
        explicit = {"davis": self.davis_root, "seg": self.seg_root, "knn": self.knn_root}[task]
        return choose_data(task, explicit, self.data_root)

    def propagation(self, builtin: bool) -> PropagationSettings:
        """Propagation settings, with the frame size resolved for the data set kind."""
        short = self.short_side
        if short is None:
            short = None if builtin else REAL_DAVIS_SHORT_SIDE
        elif short == 0:
            short = None
        return PropagationSettings(n_last_frames=self.n_last_frames,
                                   radius=self.size_mask_neighborhood, topk=self.topk,
                                   temperature=self.davis_temperature, short_side=short)

    def probe(self, builtin: bool) -> ProbeSettings:
        """Probe settings, with the image size resolved for the data set kind."""
        size = self.seg_image_size or (None if builtin else REAL_SEG_IMAGE_SIZE)
        return ProbeSettings(epochs=self.seg_epochs, lr=self.seg_lr,
                             batch_size=self.seg_batch_size, seed=self.seg_seed,
                             reduce_zero_label=self.reduce_zero_label, image_size=size)

    def seg_classes(self, choice: DataChoice) -> int:
        """Class count: ``num_classes``, else the built-in set's, else ADE20K's 150."""
        return self.num_classes or choice.num_classes or ADE20K_NUM_CLASSES

    def knn_geometry(self, builtin: bool) -> tuple[int | None, bool]:
        """``(image_size, center_crop)`` for k-NN on the built-in or a real data set."""
        size = self.knn_image_size or (None if builtin else REAL_KNN_IMAGE_SIZE)
        crop = (not builtin) if self.center_crop is None else self.center_crop
        return size, crop
