"""Anchors: MONAI's ``AnchorGeneratorWithAnchorShape`` plus a helper that derives anchor shapes from data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape


def make_anchor_generator(anchor_shapes: Sequence[Sequence[float]]) -> AnchorGeneratorWithAnchorShape:
    """One feature level, ``r = len(anchor_shapes)`` anchors of size (x, y, z) voxels per location.

    MONAI centres the anchors of location ``i`` at ``i * stride + stride // 2`` and rounds half sizes, so
    even sizes are kept exactly.
    """
    shapes = [[float(v) for v in s] for s in anchor_shapes]
    if not shapes or any(len(s) != 3 or min(s) <= 0 for s in shapes):
        raise ValueError(f"anchor_shapes must be a list of positive (x, y, z) sizes, got {anchor_shapes}")
    return AnchorGeneratorWithAnchorShape(feature_map_scales=(1,), base_anchor_shapes=shapes, indexing="ij")


def anchor_shapes_from_boxes(
    boxes: Sequence[np.ndarray] | np.ndarray, n_shapes: int = 3, seed: int = 0, iterations: int = 50
) -> list[list[float]]:
    """k-means on log box sizes: ``n_shapes`` anchor sizes (x, y, z), rounded to even voxels, small to large.

    Args:
        boxes: ``(N, 6)`` boxes (or a list of such arrays) at the working spacing, StandardMode.
    """
    arr = (
        np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 6) for b in boxes])
        if isinstance(boxes, (list, tuple))
        else np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    )
    if len(arr) == 0:
        raise ValueError("no boxes to derive anchor shapes from")
    sizes = np.log(np.maximum(arr[:, 3:] - arr[:, :3], 1.0))
    n_shapes = min(n_shapes, len(np.unique(sizes, axis=0)))
    rng = np.random.default_rng(seed)
    centres = np.quantile(sizes, (np.arange(n_shapes) + 0.5) / n_shapes, axis=0)
    for _ in range(iterations):
        assign = np.argmin(((sizes[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        for k in range(n_shapes):
            members = sizes[assign == k]
            centres[k] = members.mean(axis=0) if len(members) else sizes[rng.integers(len(sizes))]
    shapes = np.maximum(2.0 * np.floor(np.exp(centres) / 2.0 + 0.5), 2.0)  # nearest even size, halves up
    order = np.argsort(shapes.prod(axis=1))
    return shapes[order].tolist()


def anchor_shapes_from_datalist(
    dataset: str, working_spacing: Sequence[float], n_shapes: int = 3, section: str = "training"
) -> list[list[float]]:
    """Anchor shapes from the training boxes of a dataset, converted to voxels of ``working_spacing``."""
    from weakseg_monai.data.datalist import load_section
    from weakseg_monai.data.io import resolve_spacing

    boxes = []
    target = np.asarray(working_spacing, dtype=np.float64)
    for item in load_section(dataset, section):
        b = np.asarray(item.get("box", []), dtype=np.float64).reshape(-1, 6)
        spacing = np.asarray(resolve_spacing(item["image"], item.get("spacing")))
        boxes.append(b * np.tile(spacing / target, 2))
    return anchor_shapes_from_boxes(boxes, n_shapes)
