"""3D RoIAlign: torchvision's ``roi_align`` rules carried to three spatial axes, in pure PyTorch.

Why it is written here: torchvision's RoIAlign is 2D only (and cannot be imported beside the CPU torch
this project pins), and MONAI has none. ``F.grid_sample`` with zero padding blends border samples with
zeros, which differs from RoIAlign at the stack border, where cut cells are common.

Rules, per axis, exactly as torchvision (``aligned=True`` shifts box corners by -0.5 voxel):

- a RoI ``[lo, hi)`` (input voxel coordinates) maps to ``start = lo * scale - 0.5``, ``size = (hi - lo) * scale``
  (``aligned=False``: no shift and ``size >= 1``); the RoI is split into ``s`` bins;
- each bin averages ``g`` regularly spaced samples per axis (``g = sampling_ratio``, or
  ``ceil(size / s)`` when ``sampling_ratio <= 0``), ``g³`` per bin;
- a sample beyond ``[-1, S]`` on any axis counts as 0; otherwise its coordinate is clamped to ``[0, S-1]``
  and it is interpolated trilinearly from its 8 neighbours.

Implementation: trilinear interpolation on a tensor-product sample grid is separable, and so are the
bin average and the out-of-range rule (a sample is zero iff one of its coordinates is out of range). So
each RoI's output is ``A_x ⊗ A_y ⊗ A_z`` applied to a crop of the feature map, where ``A_a`` (``s × W``) holds
the averaged interpolation weights of axis ``a``. All RoIs are done at once (crops padded to a common
window), with no Python loop over RoIs, for fixed or adaptive sampling ratios, on any device, and
autograd gives the gradient with respect to the features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _triple(value: float | int | Sequence, name: str) -> tuple:
    if isinstance(value, (int, float)):
        return (value,) * 3
    value = tuple(value)
    if len(value) != 3:
        raise ValueError(f"{name} must be a number or 3 numbers (x, y, z), got {value}")
    return value


def _axis_weights(
    lo: Tensor, hi: Tensor, size: int, out: int, scale: float, sampling_ratio: int, aligned: bool
) -> tuple[Tensor, Tensor]:
    """Averaged interpolation weights of one axis.

    Args:
        lo, hi: ``(K,)`` RoI bounds in input voxel coordinates (float64 recommended).
        size: feature map size ``S`` along this axis.
        out: number of output bins ``s``.
    Returns:
        ``weights (K, s, W)`` and the crop's first index ``origin (K,)``: bin ``o`` of RoI ``k`` is
        ``sum_w weights[k, o, w] * feature[origin[k] + w]``.
    """
    offset = 0.5 if aligned else 0.0
    start = lo * scale - offset
    length = (hi - lo) * scale
    if not aligned:
        length = length.clamp(min=1.0)
    bin_size = length / out
    if sampling_ratio > 0:
        grid = torch.full_like(lo, float(sampling_ratio))
        g_max = sampling_ratio
    else:
        grid = torch.ceil(bin_size).clamp(min=1.0)
        g_max = int(grid.max().item()) if grid.numel() else 1
    j = torch.arange(g_max, dtype=lo.dtype, device=lo.device)
    o = torch.arange(out, dtype=lo.dtype, device=lo.device)
    # sample coordinates (K, s, g); samples j >= grid[k] are padding with weight 0
    coord = (
        start[:, None, None]
        + (o[None, :, None] + (j[None, None, :] + 0.5) / grid[:, None, None]) * bin_size[:, None, None]
    )
    used = j[None, None, :] < grid[:, None, None]
    valid = used & (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0.0)
    low = coord.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low.to(coord.dtype))
    scale_w = valid.to(coord.dtype) / grid[:, None, None]
    w_low = (1.0 - frac) * scale_w
    w_high = frac * scale_w

    k = lo.shape[0]
    if k == 0:
        return coord.new_zeros((0, out, 1)), low.new_zeros((0,))
    # crop window: from the smallest index any valid sample touches to the largest
    big = torch.iinfo(torch.long).max
    origin = torch.where(valid, low, torch.full_like(low, big)).amin(dim=(1, 2))
    origin = torch.where(origin == big, torch.zeros_like(origin), origin)
    top = torch.where(valid, high, torch.full_like(high, -1)).amax(dim=(1, 2))
    width = int((top - origin).max().clamp(min=0).item()) + 1
    weights = coord.new_zeros((k, out, width))
    rel_low = (low - origin[:, None, None]).clamp(0, width - 1)
    rel_high = (high - origin[:, None, None]).clamp(0, width - 1)
    weights.scatter_add_(2, rel_low, w_low)
    weights.scatter_add_(2, rel_high, w_high)
    return weights, origin


def gather_crops(values: Tensor, batch_index: Tensor, origins: Sequence[Tensor], widths: Sequence[int]) -> Tensor:
    """Crops ``(K, W1, W2, W3, C)`` of channels-last ``values (N, S1, S2, S3, C)`` starting at ``origins``.

    Indices past the end are clamped; they only ever meet zero weights.
    """
    sizes = values.shape[1:4]
    idx = [
        (origin[:, None] + torch.arange(w, device=origin.device)[None, :]).clamp(max=s - 1)
        for origin, w, s in zip(origins, widths, sizes)
    ]
    return values[
        batch_index[:, None, None, None],
        idx[0][:, :, None, None],
        idx[1][:, None, :, None],
        idx[2][:, None, None, :],
    ]


def apply_separable(weights: Sequence[Tensor], crops: Tensor) -> Tensor:
    """``out[k, c, a, b, d] = sum_ijl Wx[k,a,i] Wy[k,b,j] Wz[k,d,l] crops[k,i,j,l,c]`` -> ``(K, C, s1, s2, s3)``."""
    wx, wy, wz = (w.to(crops.dtype) for w in weights)
    t = torch.einsum("kdl,kijlc->kijdc", wz, crops)
    t = torch.einsum("kbj,kijdc->kibdc", wy, t)
    return torch.einsum("kai,kibdc->kcabd", wx, t)


def roi_weights(
    rois: Tensor,
    spatial_size: Sequence[int],
    output_size: int | Sequence[int],
    spatial_scale: float | Sequence[float] = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> tuple[list[Tensor], list[Tensor]]:
    """Per-axis RoIAlign weights ``(K, s_a, W_a)`` and crop origins ``(K,)`` for ``rois (K, 7)``."""
    out = _triple(output_size, "output_size")
    scale = _triple(spatial_scale, "spatial_scale")
    boxes = rois[:, 1:].detach().to(torch.float64)
    weights, origins = [], []
    for a in range(3):
        w, o = _axis_weights(
            boxes[:, a], boxes[:, a + 3], int(spatial_size[a]), int(out[a]), float(scale[a]), sampling_ratio, aligned
        )
        weights.append(w)
        origins.append(o)
    return weights, origins


def roi_align_3d(
    features: Tensor,
    rois: Tensor,
    output_size: int | Sequence[int],
    spatial_scale: float | Sequence[float] = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> Tensor:
    """3D RoIAlign.

    Args:
        features: ``(N, C, S1, S2, S3)`` feature maps, spatial axes in the project's (x, y, z) order.
        rois: ``(K, 7)`` rows ``(batch_index, x0, y0, z0, x1, y1, z1)``: box corners in input voxel
            coordinates (MONAI ``StandardMode``, half-open), same axis order as the features.
        output_size: ``s`` or ``(s1, s2, s3)`` bins per axis.
        spatial_scale: feature size / input size, a number or one per axis (anisotropic strides).
        sampling_ratio: samples per bin and axis; ``<= 0`` adapts ``ceil(roi_size / s)`` per RoI and axis.
        aligned: shift box corners by -0.5 voxel (pixel-centre model), as torchvision's ``aligned=True``.
    Returns:
        ``(K, C, s1, s2, s3)``, differentiable with respect to ``features``.
    """
    if features.ndim != 5:
        raise ValueError(f"features must be (N, C, S1, S2, S3), got {tuple(features.shape)}")
    if rois.ndim != 2 or rois.shape[1] != 7:
        raise ValueError(f"rois must be (K, 7) = (batch_index, x0, y0, z0, x1, y1, z1), got {tuple(rois.shape)}")
    out = _triple(output_size, "output_size")
    if rois.shape[0] == 0:
        return features.new_zeros((0, features.shape[1], *out))
    weights, origins = roi_weights(rois, features.shape[2:], out, spatial_scale, sampling_ratio, aligned)
    channels_last = features.permute(0, 2, 3, 4, 1)
    crops = gather_crops(channels_last, rois[:, 0].long(), origins, [w.shape[2] for w in weights])
    return apply_separable(weights, crops)


class RoIAlign3D(nn.Module):
    """``nn.Module`` form of :func:`roi_align_3d` (see there for the rules and shapes)."""

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float | Sequence[float] = 1.0,
        sampling_ratio: int = 2,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size = _triple(output_size, "output_size")
        self.spatial_scale = _triple(spatial_scale, "spatial_scale")
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    @torch.jit.unused  # flexible (number | per-axis) arguments are not TorchScript; eager mode is unaffected
    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return roi_align_3d(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
