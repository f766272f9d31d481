"""VoxResNet-style backbone (Chen et al. 2018, used by Zhao et al. 2018, Fig. 2).

A VoxRes block is norm-ReLU-conv3x3x3 twice plus the identity. Each stage downsamples once (a strided
norm-ReLU-conv) and stacks VoxRes blocks. Strides are per axis, so a stack whose z is coarse can be
downsampled in-plane only first (the default: a (2, 2, 1) stem, then (2, 2, 2) twice). The coarsest stage is
up-convolved and added to the one above it (a short top-down path) so the detection level sees the
context of whole nuclei.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers.factories import Act
from monai.networks.layers.utils import get_norm_layer
from torch import Tensor, nn


def _norm_act(channels: int, norm: str | tuple) -> nn.Sequential:
    return nn.Sequential(get_norm_layer(norm, spatial_dims=3, channels=channels), Act["relu"](inplace=False))


class VoxResBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))))))`` with 3x3x3 convolutions (the VoxRes module)."""

    def __init__(self, channels: int, norm: str | tuple = ("group", {"num_groups": 8})) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm_act(channels, norm),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
            _norm_act(channels, norm),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class VoxResBackbone(nn.Module):
    """Stem + stages of (strided conv, VoxRes blocks); returns every stage's features.

    Args:
        in_channels: image channels.
        channels: channels of the stem and of each stage, e.g. ``(16, 32, 48)``.
        strides: per-stage stride, (x, y, z); the first entry is the stem's (in-plane only by default).
        blocks: VoxRes blocks per stage (stem included).
        norm: MONAI norm spec (GroupNorm by default: detection batches are small).
    Forward:
        ``(N, in_channels, X, Y, Z)`` -> list of ``(N, channels[i], X / s_i, Y / s_i, Z / s_i)`` with
        ``s_i`` the cumulative stride; the coarsest level is merged into the one above it.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 48),
        strides: Sequence[Sequence[int]] = ((2, 2, 1), (2, 2, 2), (2, 2, 2)),
        blocks: Sequence[int] = (1, 2, 2),
        norm: str | tuple = ("group", {"num_groups": 8}),
    ) -> None:
        super().__init__()
        if not (len(channels) == len(strides) == len(blocks)):
            raise ValueError("channels, strides and blocks need one entry per stage")
        self.channels = tuple(int(c) for c in channels)
        self.strides = tuple(tuple(int(s) for s in st) for st in strides)
        stages = []
        prev = in_channels
        for i, (c, st, n) in enumerate(zip(self.channels, self.strides, blocks)):
            if i == 0:
                down = nn.Conv3d(prev, c, 3, stride=st, padding=1, bias=False)
            else:
                down = nn.Sequential(_norm_act(prev, norm), nn.Conv3d(prev, c, 3, stride=st, padding=1, bias=False))
            stages.append(nn.Sequential(down, *[VoxResBlock(c, norm) for _ in range(n)]))
            prev = c
        self.stages = nn.ModuleList(stages)
        last = self.strides[-1]
        self.top_down = nn.ConvTranspose3d(self.channels[-1], self.channels[-2], kernel_size=last, stride=last)
        self.top_down_norm = _norm_act(self.channels[-2], norm)

    def cumulative_strides(self) -> list[tuple[int, int, int]]:
        out, acc = [], [1, 1, 1]
        for st in self.strides:
            acc = [a * s for a, s in zip(acc, st)]
            out.append(tuple(acc))
        return out

    def size_divisor(self) -> tuple[int, int, int]:
        """Input sizes must be multiples of this (the total stride) per axis."""
        return self.cumulative_strides()[-1]

    def forward(self, x: Tensor) -> list[Tensor]:
        feats: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        up = self.top_down(feats[-1])
        feats[-2] = self.top_down_norm(feats[-2] + up)
        return feats


def check_divisible(shape: Sequence[int], divisor: Sequence[int]) -> None:
    bad = [s for s, d in zip(shape, divisor) if s % d]
    if bad:
        raise ValueError(f"input spatial size {tuple(shape)} must be a multiple of {tuple(divisor)} per axis (x, y, z)")
