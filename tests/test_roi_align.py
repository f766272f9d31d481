"""3D RoIAlign against an independent float64 loop reference of torchvision's rules, and gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weakseg_monai.layers import RoIAlign3D, roi_align_3d


def _interpolate(volume: np.ndarray, point: tuple[float, float, float]) -> float:
    """torchvision's bilinear_interpolate, carried to 3 axes (one sample)."""
    lows, highs, fracs = [], [], []
    for c, size in zip(point, volume.shape):
        if c < -1.0 or c > size:
            return 0.0
        c = max(c, 0.0)
        low = int(math.floor(c))
        if low >= size - 1:
            low = high = size - 1
            c = float(low)
        else:
            high = low + 1
        lows.append(low)
        highs.append(high)
        fracs.append(c - low)
    value = 0.0
    for corner in range(8):
        idx, w = [], 1.0
        for a in range(3):
            if corner >> a & 1:
                idx.append(highs[a])
                w *= fracs[a]
            else:
                idx.append(lows[a])
                w *= 1.0 - fracs[a]
        value += w * volume[tuple(idx)]
    return value


def reference_roi_align(features, rois, out, scale, ratio, aligned):
    """Loop reference: (N, C, S1, S2, S3) float64 numpy, rois (K, 7) -> (K, C, *out)."""
    offset = 0.5 if aligned else 0.0
    result = np.zeros((len(rois), features.shape[1], *out))
    for k, roi in enumerate(rois):
        b = int(roi[0])
        starts = [roi[1 + a] * scale[a] - offset for a in range(3)]
        sizes = [(roi[4 + a] - roi[1 + a]) * scale[a] for a in range(3)]
        if not aligned:
            sizes = [max(s, 1.0) for s in sizes]
        bins = [sizes[a] / out[a] for a in range(3)]
        grid = [ratio if ratio > 0 else int(math.ceil(sizes[a] / out[a])) for a in range(3)]
        grid = [max(g, 1) for g in grid]
        for c in range(features.shape[1]):
            vol = features[b, c]
            for i in range(out[0]):
                for j in range(out[1]):
                    for m in range(out[2]):
                        acc = 0.0
                        for gi in range(grid[0]):
                            x = starts[0] + i * bins[0] + (gi + 0.5) * bins[0] / grid[0]
                            for gj in range(grid[1]):
                                y = starts[1] + j * bins[1] + (gj + 0.5) * bins[1] / grid[1]
                                for gm in range(grid[2]):
                                    z = starts[2] + m * bins[2] + (gm + 0.5) * bins[2] / grid[2]
                                    acc += _interpolate(vol, (x, y, z))
                        result[k, c, i, j, m] = acc / (grid[0] * grid[1] * grid[2])
    return result


ROIS = [
    [0, 1.0, 2.0, 0.5, 7.0, 6.5, 3.0],  # inside
    [1, -2.0, -1.5, -0.7, 3.3, 4.0, 2.2],  # crosses the low border
    [0, 5.5, 4.0, 1.0, 11.0, 9.5, 4.8],  # crosses the high border
    [1, 0.2, 0.3, 0.1, 0.9, 0.8, 0.4],  # smaller than a voxel
    [0, -3.0, -3.0, -3.0, -1.8, -2.5, -2.0],  # fully outside
]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [2, 0, 1])
@pytest.mark.parametrize("scale", [(1.0, 1.0, 1.0), (0.5, 0.5, 1.0)])
def test_matches_loop_reference(aligned, ratio, scale):
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 9, 8, 4, generator=gen)
    rois = torch.tensor(ROIS)
    out = (3, 2, 2)
    got = roi_align_3d(features, rois, out, scale, ratio, aligned)
    want = reference_roi_align(features.double().numpy(), np.array(ROIS), out, scale, ratio, aligned)
    assert got.shape == (5, 3, 3, 2, 2)
    assert np.abs(got.numpy() - want).max() <= 1e-5


def test_single_slice_volume_and_module():
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(1, 2, 6, 5, 1, generator=gen)
    rois = torch.tensor([[0, 0.0, 0.0, 0.0, 6.0, 5.0, 1.0], [0, 2.0, 1.0, -0.5, 5.0, 4.0, 1.5]])
    module = RoIAlign3D(output_size=3, spatial_scale=1.0, sampling_ratio=2)
    got = module(features, rois)
    want = reference_roi_align(features.double().numpy(), rois.double().numpy(), (3, 3, 3), (1, 1, 1), 2, True)
    assert np.abs(got.numpy() - want).max() <= 1e-5
    assert "output_size=(3, 3, 3)" in repr(module)


def test_border_differs_from_zero_padding():
    """A RoI starting at -0.25 voxel reads the edge voxel fully (clamp), not 0.75 of it."""
    features = torch.ones(1, 1, 4, 4, 4)
    rois = torch.tensor([[0, 0.25, 0.25, 0.25, 1.25, 1.25, 1.25]])  # aligned: sample at -0.25 +0.5 = 0.25 ...
    out = roi_align_3d(features, rois, 1, 1.0, 1, aligned=True)  # single sample at coordinate 0.25 - 0.5 + 0.5
    assert torch.allclose(out, torch.ones_like(out))
    edge = roi_align_3d(features, torch.tensor([[0, -0.5, 0.0, 0.0, 0.5, 1.0, 1.0]]), 1, 1.0, 1, aligned=True)
    assert torch.allclose(edge, torch.ones_like(edge))  # sample at x = -0.5: clamped to voxel 0


def test_gradcheck_and_empty():
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(2, 2, 5, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.3, -0.4, 4.2, 3.9, 2.1], [1, 1.0, 1.0, 0.0, 5.5, 3.0, 3.5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align_3d(f, rois, (2, 2, 2), 1.0, 2, True), (features,))
    empty = roi_align_3d(features, torch.zeros(0, 7, dtype=torch.float64), 3)
    assert empty.shape == (0, 2, 3, 3, 3)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(N, C, S1, S2, S3\)"):
        roi_align_3d(torch.zeros(1, 4, 4, 4), torch.zeros(1, 7), 2)
    with pytest.raises(ValueError, match=r"\(K, 7\)"):
        roi_align_3d(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 6), 2)
