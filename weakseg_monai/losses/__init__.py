"""Losses: L_box (Eq. 1 of the paper, c classes), the partial (mask-weighted) mask loss, and the box-supervised
mask loss for box-only instances (3D BoxInst), and the masked wall-map loss (issue 25)."""

from weakseg_monai.losses.box_loss import DetectionLoss, box_loss
from weakseg_monai.losses.box_supervised_mask import BoxSupervisedMaskLoss, pairwise_loss, projection_loss
from weakseg_monai.losses.masked_wall import MaskedWallLoss
from weakseg_monai.losses.partial_mask import PartialMaskLoss, partial_mask_loss, project_masks_on_boxes

__all__ = [
    "BoxSupervisedMaskLoss",
    "DetectionLoss",
    "MaskedWallLoss",
    "PartialMaskLoss",
    "box_loss",
    "pairwise_loss",
    "partial_mask_loss",
    "project_masks_on_boxes",
    "projection_loss",
]
