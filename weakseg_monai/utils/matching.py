"""The paper's anchor matching (Sec. 2.1) and the sampling of anchors for the classification loss.

MONAI's ``Matcher``/``ATSSMatcher`` implement ATSS; the paper's rule is simpler and is written here:
for every ground-truth box its max-IoU anchor(s) are positive, and every anchor whose IoU with some
ground-truth box exceeds ``positive_iou`` (0.4) is positive too; all others are negative (optionally an
ignore band between ``negative_iou`` and ``positive_iou``).
"""

from __future__ import annotations

import torch
from monai.data.box_utils import box_iou
from torch import Tensor

NEGATIVE = -1
IGNORE = -2


def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_ignore: Tensor | None = None,
    positive_iou: float = 0.4,
    negative_iou: float | None = None,
) -> Tensor:
    """Match anchors to ground truth.

    Args:
        anchors: ``(A, 6)`` StandardMode boxes.
        gt_boxes: ``(G, 6)``.
        gt_ignore: ``(G,)`` bool; anchors matched to such a box (e.g. one a crop cut to < 50% of its
            volume) are ignored rather than positive.
        positive_iou: IoU above which an anchor is positive.
        negative_iou: anchors with max IoU in ``[negative_iou, positive_iou]`` are ignored; ``None`` = no band.
    Returns:
        ``(A,)`` long: the matched GT index for positives, ``NEGATIVE`` (-1) or ``IGNORE`` (-2).
    """
    matched = torch.full((anchors.shape[0],), NEGATIVE, dtype=torch.long, device=anchors.device)
    if gt_boxes.numel() == 0:
        return matched
    iou = box_iou(gt_boxes.to(torch.float32), anchors.to(torch.float32))  # (G, A)
    best_iou, best_gt = iou.max(dim=0)
    positive = best_iou > positive_iou
    matched[positive] = best_gt[positive]
    if negative_iou is not None:
        matched[(best_iou >= negative_iou) & ~positive] = IGNORE
    # every GT box keeps its max-IoU anchor(s), even when that IoU is low
    per_gt_best = iou.max(dim=1, keepdim=True).values
    gt_idx, anchor_idx = torch.nonzero((iou == per_gt_best) & (per_gt_best > 0), as_tuple=True)
    matched[anchor_idx] = gt_idx
    if gt_ignore is not None and gt_ignore.any():
        matched[(matched >= 0) & gt_ignore.to(matched.device)[matched.clamp(min=0)]] = IGNORE
    return matched


def sample_anchors(
    matched: Tensor,
    negative_scores: Tensor | None = None,
    neg_pos_ratio: float = 3.0,
    min_negatives: int = 32,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """All positives plus ``max(neg_pos_ratio * n_pos, min_negatives)`` negatives.

    With ``negative_scores`` (e.g. the foreground probability of each anchor) the hardest negatives are
    taken (hard-negative mining); without, a random subset.
    Returns index tensors ``(positives, negatives)``.
    """
    pos = torch.nonzero(matched >= 0).squeeze(1)
    neg = torch.nonzero(matched == NEGATIVE).squeeze(1)
    n_neg = min(neg.numel(), max(int(neg_pos_ratio * pos.numel()), min_negatives))
    if negative_scores is not None:
        order = torch.topk(negative_scores[neg], n_neg).indices
    else:
        order = torch.randperm(neg.numel(), generator=generator, device="cpu")[:n_neg].to(neg.device)
    return pos, neg[order]
