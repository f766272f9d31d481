"""The mask-weight layer: a mask loss counted only for instances that have a voxel mask (Sec. 2.2).

torchvision's ``maskrcnn_loss`` averages BCE over every positive RoI; with weak annotation most
instances have a box but no voxels, so each RoI carries a weight (1 = its matched instance is annotated,
0 = box only) and the loss is the average BCE over the voxels of the weighted RoIs. Box-only RoIs get
exactly zero loss and zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weakseg_monai.layers.roi_align import apply_separable, gather_crops, roi_weights


def project_masks_on_boxes(
    instances: Tensor, instance_ids: Tensor, boxes: Tensor, mask_size: int, batch_index: Tensor | None = None
) -> Tensor:
    """Mask targets: each RoI's instance (voxels ``== id``) RoIAligned to ``mask_size³`` and thresholded at 0.5.

    Args:
        instances: ``(N, X, Y, Z)`` (or ``(X, Y, Z)``) instance label volumes.
        instance_ids: ``(K,)`` label value of each RoI's instance.
        boxes: ``(K, 6)`` RoIs in voxel coordinates.
        batch_index: ``(K,)`` volume of each RoI (default 0).
    Returns:
        ``(K, M, M, M)`` float targets in {0, 1}.
    """
    if instances.ndim == 3:
        instances = instances[None]
    k = boxes.shape[0]
    if batch_index is None:
        batch_index = torch.zeros(k, dtype=torch.long, device=boxes.device)
    if k == 0:
        return boxes.new_zeros((0, mask_size, mask_size, mask_size))
    rois = torch.cat([batch_index[:, None].to(boxes.dtype), boxes], dim=1)
    weights, origins = roi_weights(rois, instances.shape[1:], mask_size, 1.0, 2, True)
    crops = gather_crops(instances[..., None], batch_index.long(), origins, [w.shape[2] for w in weights])
    binary = (crops == instance_ids.view(-1, 1, 1, 1, 1).to(crops.dtype)).to(torch.float32)
    return (apply_separable(weights, binary)[:, 0] >= 0.5).to(torch.float32)


def partial_mask_loss(mask_logits: Tensor, mask_targets: Tensor, weights: Tensor) -> Tensor:
    """Average binary cross-entropy over the voxels of RoIs with weight 1 (the mask-weight layer).

    Args:
        mask_logits: ``(K, 1, M, M, M)`` or ``(K, M, M, M)``.
        mask_targets: ``(K, M, M, M)`` in [0, 1].
        weights: ``(K,)``, 1 for RoIs whose instance has a voxel mask, 0 for box-only ones.
    Returns:
        Scalar; 0 through the graph when no RoI is weighted (never NaN).
    """
    logits = mask_logits.reshape(mask_targets.shape)
    w = weights.to(logits.dtype).view(-1, *([1] * (logits.ndim - 1)))
    counted = w > 0
    # unweighted RoIs are replaced before the BCE, so not even a NaN target or logit reaches their gradient
    per_voxel = F.binary_cross_entropy_with_logits(
        torch.where(counted, logits, torch.zeros_like(logits)),
        torch.where(counted, mask_targets.to(logits.dtype), torch.zeros_like(logits)),
        reduction="none",
    )
    voxels_per_roi = logits[0].numel() if logits.shape[0] else 1
    denominator = (weights > 0).sum().clamp(min=1) * voxels_per_roi
    return (per_voxel * w).sum() / denominator


class PartialMaskLoss(nn.Module):
    """``nn.Module`` form of :func:`partial_mask_loss` (the paper's mask-weight layer + average BCE)."""

    @torch.jit.unused  # training only: an exported (scripted) network never calls its losses
    def forward(self, mask_logits: Tensor, mask_targets: Tensor, weights: Tensor) -> Tensor:
        return partial_mask_loss(mask_logits, mask_targets, weights)
