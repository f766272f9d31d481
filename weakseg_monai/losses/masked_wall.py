"""The wall map's loss where the weak annotation says something, and nothing elsewhere (issue 25).

Cross-entropy over the classes of ``data.wall_targets`` (background / interior / wall), averaged over the voxels
whose target is not ``IGNORE``: a voxel without annotation gets exactly zero loss and zero gradient, the dense
counterpart of the mask-weight layer (``losses.partial_mask``). ``torch.nn.CrossEntropyLoss(ignore_index=...)`` does
the masking; this class adds the channel-dim label MONAI's loaders give and a zero (with a graph) for a crop with
no annotated voxel at all, where the plain loss would be NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weakseg_monai.data.wall_targets import IGNORE


class MaskedWallLoss(nn.Module):
    """``logits (N, C, X, Y, Z)``, ``target (N, 1, X, Y, Z)`` or ``(N, X, Y, Z)`` integer classes -> scalar.

    ``class_weights``: optional ``(C,)`` weights (walls are thin: a few percent of the annotated voxels)."""

    def __init__(self, ignore_index: int = IGNORE, class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if target.ndim == logits.ndim:
            target = target[:, 0]
        target = target.long()
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        weight = None if self.class_weights is None else self.class_weights.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)


__all__ = ["MaskedWallLoss"]
