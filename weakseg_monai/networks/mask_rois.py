"""The RoIs one image's mask losses see in training: which proposals, which ground-truth boxes, within a budget.

As Mask R-CNN: positive proposals (detached) that overlap their box at IoU >= ``MASK_ROI_IOU``, plus the ground-truth
boxes themselves. Each RoI has one owner of its mask supervision: BCE (its instance has a voxel mask: the paper's
mask-weight 1), the box terms (box only, when they are on; not for boxes a crop cut), or none (dropped here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from weakseg_monai.utils.boxes import paired_iou

MASK_ROI_IOU = 0.5  # a proposal trains the mask head only this close to its box (Mask R-CNN's positive RoIs)


def training_mask_rois(
    proposals: Tensor,
    gt_boxes: Tensor,
    proposal_gt: Tensor,
    annotated: Tensor,
    ignored: Tensor,
    box_terms: bool,
    budget: int,
) -> tuple[Tensor, Tensor]:
    """``(boxes (K, 6), gt_index (K,))``: the chosen RoIs, those with a voxel mask first, and each one's box.

    Args:
        proposals: ``(P, 6)`` decoded boxes of the positive anchors; proposal_gt: ``(P,)`` the box each matched.
        gt_boxes: ``(G, 6)``; annotated, ignored: ``(G,)`` bool (has a voxel mask; a crop cut it too much).
        box_terms: whether box-only instances get the box terms (else they get no mask loss and no RoI).
        budget: at most this many RoIs (``split_mask_roi_budget``).
    """
    good = paired_iou(proposals, gt_boxes[proposal_gt]) >= MASK_ROI_IOU
    boxes = torch.cat([proposals[good], gt_boxes])
    gt_index = torch.cat([proposal_gt[good], torch.arange(len(gt_boxes), device=gt_boxes.device)])
    sized = ((boxes[:, 3:] - boxes[:, :3]) >= 1.0).all(dim=1)
    with_mask = torch.nonzero(sized & annotated[gt_index]).squeeze(1)
    box_only = torch.nonzero(sized & ~annotated[gt_index] & ~ignored[gt_index]).squeeze(1)
    if not box_terms:
        box_only = box_only[:0]
    with_mask, box_only = split_mask_roi_budget(with_mask, box_only, budget)
    chosen = torch.cat([with_mask, box_only])
    return boxes[chosen], gt_index[chosen]


def split_mask_roi_budget(with_mask: Tensor, box_only: Tensor, budget: int) -> tuple[Tensor, Tensor]:
    """Random subsets of two RoI index sets within ``budget``: half each (the masked half rounded up), and
    what one side does not use goes to the other, so a step costs no more mask-head RoIs than before."""
    take_mask = min(with_mask.numel(), max(budget - box_only.numel(), (budget + 1) // 2))
    take_box = min(box_only.numel(), budget - take_mask)

    def pick(index: Tensor, n: int) -> Tensor:
        return index[torch.randperm(index.numel(), device="cpu")[:n].to(index.device)] if index.numel() > n else index

    return pick(with_mask, take_mask), pick(box_only, take_box)
