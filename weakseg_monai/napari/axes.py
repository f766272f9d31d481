"""The one place where our (x, y, z) order meets napari's (z, y, x) display order.

Everything in the plugin holds (x, y, z) arrays, boxes and spacings (``weakseg_monai.conventions``); a layer
holds the same array transposed (a view, no copy), and its ``scale`` is the spacing reversed. Nothing else in the
plugin reverses an axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from weakseg_monai.conventions import as_spacing, assert_volume_3d


def to_display(volume_xyz: np.ndarray) -> np.ndarray:
    """An (x, y, z) volume as napari's (z, y, x) layer data (a transposed view: painting into it paints ours)."""
    return assert_volume_3d(np.asarray(volume_xyz), "volume").transpose(2, 1, 0)


def levels_to_display(levels_xyz: Sequence) -> list:
    """Resolution levels (x, y, z; dask arrays, full resolution first) as a multiscale layer's (z, y, x) data, lazily
    (nothing is read: napari reads the chunks it shows)."""
    for level in levels_xyz:
        if level.ndim != 3:
            raise ValueError(f"expected 3D (x, y, z) levels, got shape {tuple(level.shape)}")
    return [level.transpose(2, 1, 0) for level in levels_xyz]


def from_display(volume_zyx: np.ndarray) -> np.ndarray:
    """A (z, y, x) layer's data back in our (x, y, z) order (a view)."""
    return assert_volume_3d(np.asarray(volume_zyx), "layer data").transpose(2, 1, 0)


def scale_from_spacing(spacing_xyz: Sequence[float]) -> tuple[float, float, float]:
    """A layer's ``scale`` (z, y, x) for a spacing (x, y, z) in µm."""
    x, y, z = as_spacing(spacing_xyz)
    return (z, y, x)


def spacing_from_scale(scale_zyx: Sequence[float]) -> tuple[float, float, float]:
    """The (x, y, z) spacing in µm of a layer with ``scale`` (z, y, x) (its last three axes)."""
    z, y, x = (float(s) for s in list(scale_zyx)[-3:])
    return as_spacing((x, y, z))


def point_from_display(point_zyx: Sequence[float]) -> np.ndarray:
    """A (z, y, x) data coordinate of a layer as (x, y, z)."""
    return np.asarray(point_zyx, dtype=np.float64)[-3:][::-1].copy()


def points_to_display(points_xyz: np.ndarray) -> np.ndarray:
    """``(..., 3)`` (x, y, z) coordinates as (z, y, x) layer coordinates."""
    return np.asarray(points_xyz, dtype=np.float64)[..., ::-1].copy()
