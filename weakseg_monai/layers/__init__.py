"""Layers MONAI and torchvision lack in 3D: RoIAlign3D."""

from weakseg_monai.layers.roi_align import RoIAlign3D, roi_align_3d

__all__ = ["RoIAlign3D", "roi_align_3d"]
