"""Box helpers MONAI's ``box_utils`` lacks (it clips, converts and matches boxes but does not grow them, nor says
which boxes a volume's faces cut)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def expand_boxes(boxes: Tensor, context: float) -> Tensor:
    """``(R, 6)`` StandardMode boxes grown by ``context`` times their size on every side, about their centres.

    Growing is relative, so it commutes with per-axis scaling and shifting (working grid <-> input grid).
    """
    if context <= 0:
        return boxes
    margin = (boxes[:, 3:] - boxes[:, :3]) * context
    return torch.cat([boxes[:, :3] - margin, boxes[:, 3:] + margin], dim=1)


def touches_face(boxes: np.ndarray, spatial_shape: Sequence[int]) -> np.ndarray:
    """``(G,)`` bool: which ``(G, 6)`` half-open voxel boxes have a voxel on a face of a volume of ``spatial_shape``
    (x, y, z). Such *face-cut* objects are the rule in cropped stacks: only their visible part is annotated."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    return (b[:, :3] <= 0).any(axis=1) | (b[:, 3:] >= np.asarray(spatial_shape, dtype=np.float64)).any(axis=1)


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of ``boxes1[k]`` with ``boxes2[k]``, ``(K, 6)`` each (StandardMode) -> ``(K,)``.

    Why: MONAI's ``box_iou`` gives the full ``(K, K)`` matrix and its pairwise ``box_pair_giou`` the GIoU."""
    low, high = torch.maximum(boxes1[:, :3], boxes2[:, :3]), torch.minimum(boxes1[:, 3:], boxes2[:, 3:])
    inter = (high - low).clamp(min=0).prod(dim=1)
    vol1, vol2 = (boxes1[:, 3:] - boxes1[:, :3]).prod(dim=1), (boxes2[:, 3:] - boxes2[:, :3]).prod(dim=1)
    return inter / (vol1 + vol2 - inter).clamp(min=1e-6)
