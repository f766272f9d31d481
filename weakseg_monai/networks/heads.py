"""Heads of the model: the anchor-based 3D detection head and the two-level RoIAlign mask head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers.utils import get_norm_layer
from torch import Tensor, nn

from weakseg_monai.layers.roi_align import RoIAlign3D


def flatten_anchor_outputs(t: Tensor, values_per_anchor: int) -> Tensor:
    """``(N, r * d, m, n, k)`` head output -> ``(N, m * n * k * r, d)``: location-major, anchor-minor.

    This is the order of MONAI's anchor generators (meshgrid "ij" over (x, y, z), then anchor shapes).
    """
    n, ch, sx, sy, sz = t.shape
    r = ch // values_per_anchor
    return t.view(n, r, values_per_anchor, sx, sy, sz).permute(0, 3, 4, 5, 1, 2).reshape(n, -1, values_per_anchor)


class DetectionHead3D(nn.Module):
    """From a feature level of size m×n×k with p channels: ``c·r`` class logits and ``6·r`` box deltas.

    3x3x3 convolutions as the paper (Sec. 2.1), after ``tower_layers`` shared 3x3x3 conv-norm-ReLU layers.
    ``num_classes`` counts background (class index = dataset label + 1, 0 = background).
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int = 2,
        tower_layers: int = 1,
        norm: str | tuple = ("group", {"num_groups": 8}),
        prior_probability: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        tower: list[nn.Module] = []
        for _ in range(tower_layers):
            tower += [
                nn.Conv3d(in_channels, in_channels, 3, padding=1, bias=False),
                get_norm_layer(norm, spatial_dims=3, channels=in_channels),
                nn.ReLU(),
            ]
        self.tower = nn.Sequential(*tower)
        self.cls_logits = nn.Conv3d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.box_regression = nn.Conv3d(in_channels, num_anchors * 6, 3, padding=1)
        for conv in (self.cls_logits, self.box_regression):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        # start with "background almost everywhere" so early losses are not dominated by negatives
        with torch.no_grad():
            bias = self.cls_logits.bias.view(num_anchors, num_classes)
            bias[:, 0] = math.log((num_classes - 1) * (1 - prior_probability) / prior_probability)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, p, m, n, k)`` -> ``(N, c·r, m, n, k)`` logits and ``(N, 6·r, m, n, k)`` deltas."""
        x = self.tower(x)
        return self.cls_logits(x), self.box_regression(x)


class MaskHead3D(nn.Module):
    """Fig. 2 of the paper: 3D RoIAlign on two backbone levels, the coarser up-convolved, concatenated,
    then convolutions and an up-convolution to per-RoI mask logits (class-agnostic).

    Args:
        fine_channels, coarse_channels: channels of the two levels.
        fine_scale, coarse_scale: feature size / input size per axis (x, y, z) of each level.
        roi_size: RoIAlign output ``s`` on the fine level (the coarse one uses ``s // 2``).
        mask_channels: width of the head.
    Forward:
        ``fine (N, Cf, ...), coarse (N, Cc, ...), rois (K, 7)`` -> logits ``(K, 1, 2s, 2s, 2s)``.
    """

    def __init__(
        self,
        fine_channels: int,
        coarse_channels: int,
        fine_scale: Sequence[float],
        coarse_scale: Sequence[float],
        roi_size: int = 12,
        mask_channels: int = 32,
        sampling_ratio: int = 2,
        norm: str | tuple = ("group", {"num_groups": 8}),
    ) -> None:
        super().__init__()
        if roi_size % 2:
            raise ValueError(f"roi_size must be even (the coarse level aligns to roi_size / 2), got {roi_size}")
        self.roi_size = roi_size
        self.mask_size = 2 * roi_size
        self.align_fine = RoIAlign3D(roi_size, tuple(fine_scale), sampling_ratio)
        self.align_coarse = RoIAlign3D(roi_size // 2, tuple(coarse_scale), sampling_ratio)
        self.lateral_fine = nn.Conv3d(fine_channels, mask_channels, 1)
        self.up_coarse = nn.ConvTranspose3d(coarse_channels, mask_channels, 2, stride=2)
        self.body = nn.Sequential(
            nn.Conv3d(2 * mask_channels, mask_channels, 3, padding=1, bias=False),
            get_norm_layer(norm, spatial_dims=3, channels=mask_channels),
            nn.ReLU(),
            nn.Conv3d(mask_channels, mask_channels, 3, padding=1, bias=False),
            get_norm_layer(norm, spatial_dims=3, channels=mask_channels),
            nn.ReLU(),
            nn.ConvTranspose3d(mask_channels, mask_channels, 2, stride=2),
            nn.ReLU(),
        )
        self.logits = nn.Conv3d(mask_channels, 1, 1)

    @torch.jit.unused  # RoIAlign's flexible arguments are not TorchScript; eager mode is unaffected
    def forward(self, fine: Tensor, coarse: Tensor, rois: Tensor) -> Tensor:
        # channels-last-3D RoI batches: oneDNN's convolutions (forward and backward) run ~1.5x faster on
        # these many small volumes (measured on CPU, scripts/benchmark.py); results are the same numbers
        f = self.lateral_fine(self.align_fine(fine, rois).contiguous(memory_format=torch.channels_last_3d))
        c = self.up_coarse(self.align_coarse(coarse, rois).contiguous(memory_format=torch.channels_last_3d))
        return self.logits(self.body(torch.cat([f, c], dim=1))).contiguous()
