"""Losses: L_box (Eq. 1 of the paper, c classes) and the partial (mask-weighted) mask loss."""

from weakseg_monai.losses.box_loss import box_loss
from weakseg_monai.losses.partial_mask import PartialMaskLoss, partial_mask_loss, project_masks_on_boxes

__all__ = ["box_loss", "partial_mask_loss", "PartialMaskLoss", "project_masks_on_boxes"]
