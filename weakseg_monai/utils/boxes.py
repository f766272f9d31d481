"""Box helpers MONAI's ``box_utils`` lacks (it clips, converts and matches boxes but does not grow them)."""

from __future__ import annotations

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
