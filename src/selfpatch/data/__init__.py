"""Image folders, multi-crop views, and the built-in fashion-scenes data set."""

from selfpatch.data.folder import ImageFolderDataset, ScanReport
from selfpatch.data.seeded import SeededViews, collate_views
from selfpatch.data.transforms import GpuMultiCrop, MultiCropConfig, MultiCropTransform

__all__ = ["ImageFolderDataset", "ScanReport", "SeededViews", "collate_views", "GpuMultiCrop",
           "MultiCropConfig", "MultiCropTransform"]
