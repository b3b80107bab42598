"""Image folders, multi-crop views, and the built-in fashion-scenes data set."""

from selfpatch.data.folder import ImageFolderDataset, ScanReport
from selfpatch.data.seeded import SeededViews
from selfpatch.data.transforms import (
    GpuMultiCrop,
    MultiCropConfig,
    MultiCropTransform,
    multicrop_collate,
)

__all__ = ["ImageFolderDataset", "ScanReport", "SeededViews", "multicrop_collate", "GpuMultiCrop",
           "MultiCropConfig", "MultiCropTransform"]
