"""L_box of the paper (Eq. 1): log loss over c classes + λ · smooth-L1 of the Eq. 2 box offsets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def box_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    target_classes: Tensor,
    target_deltas: Tensor,
    positives: Tensor,
    negatives: Tensor,
    reg_weight: float = 1.0,
    smooth_l1_beta: float = 1.0 / 9.0,
) -> tuple[Tensor, Tensor]:
    """Classification and regression parts of L_box for one batch (anchors of all images concatenated).

    Args:
        cls_logits: ``(A, c)`` logits, class 0 = background.
        box_deltas: ``(A, 6)`` predicted Eq. 2 offsets.
        target_classes: ``(A,)`` long, used at ``positives`` (class index = label + 1); negatives are 0.
        target_deltas: ``(P, 6)`` Eq. 2 offsets of the matched GT boxes, one row per entry of ``positives``.
        positives, negatives: index tensors of the sampled anchors.
        reg_weight: λ.
        smooth_l1_beta: transition point of the smooth-L1 (1/9 as torchvision's RPN; 1.0 = Fast R-CNN).
    Returns:
        ``(loss_cls, loss_reg)``: the log loss averaged over the sampled anchors, λ · smooth-L1 summed over
        positives and divided by their number (0 with a graph when there is none).
    """
    sampled = torch.cat([positives, negatives])
    labels = torch.cat([target_classes[positives], torch.zeros_like(negatives)])
    loss_cls = F.cross_entropy(cls_logits[sampled], labels, reduction="sum") / max(sampled.numel(), 1)
    if positives.numel() == 0:
        return loss_cls, box_deltas.sum() * 0.0
    reg = F.smooth_l1_loss(box_deltas[positives], target_deltas, beta=smooth_l1_beta, reduction="sum")
    return loss_cls, reg_weight * reg / positives.numel()


class DetectionLoss:
    """L_box as the detector's injected part: ``box_loss`` with its two settings.

    Args:
        reg_weight: λ; smooth_l1_beta: the smooth-L1 transition (1/9 as torchvision's RPN).
    """

    def __init__(self, reg_weight: float = 1.0, smooth_l1_beta: float = 1.0 / 9.0) -> None:
        self.reg_weight = reg_weight
        self.smooth_l1_beta = smooth_l1_beta

    def __call__(self, cls_logits, box_deltas, classes, target_deltas, positives, negatives):
        """``(loss_cls, loss_box_reg)``; arguments as ``box_loss``."""
        return box_loss(
            cls_logits, box_deltas, classes, target_deltas, positives, negatives, self.reg_weight, self.smooth_l1_beta
        )
