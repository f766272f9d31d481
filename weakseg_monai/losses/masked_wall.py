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

    ``class_weights``: ``(C,)`` weights, or ``"balanced"``: per batch, each class present among the annotated voxels
    contributes equally (weight ~ 1 / its voxel count). Walls are a few percent of the annotated voxels, interiors
    most of them: unweighted, a model learns to call every dark voxel interior and neighbouring cells' cores merge
    across faint walls, more so the longer it trains."""

    def __init__(self, ignore_index: int = IGNORE, class_weights: list[float] | str | None = None) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.balanced = class_weights == "balanced"
        if isinstance(class_weights, str) and not self.balanced:
            raise ValueError(f"class_weights must be a list of numbers or 'balanced', got {class_weights!r}")
        fixed = class_weights is not None and not self.balanced
        weights = torch.as_tensor(class_weights, dtype=torch.float32) if fixed else None
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if target.ndim == logits.ndim:
            target = target[:, 0]
        target = target.long()
        annotated = target != self.ignore_index
        if not annotated.any():
            return logits.sum() * 0.0
        if self.balanced:
            counts = torch.bincount(target[annotated], minlength=logits.shape[1])[: logits.shape[1]].to(logits.dtype)
            present = counts > 0
            weight = torch.where(present, counts.sum() / (present.sum() * counts.clamp(min=1)), counts.new_zeros(()))
        else:
            weight = None if self.class_weights is None else self.class_weights.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)


__all__ = ["MaskedWallLoss"]
