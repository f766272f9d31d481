"""Dense wall-map targets from weak annotation, for cells outlined by a membrane or cell-wall stain (issue 25).

A box for every cell and voxel masks for a few say something about some voxels only:

- an annotated mask: its surface (a face neighbour outside it) is **wall**, the rest **interior**;
- a box-only cell: an ellipsoid around its box centre (``core_fraction`` of the half extents) is **interior**;
- outside every box: **background** (no cell there, as every cell has a box);
- everything else (the unannotated cells' walls and rims, the space between boxes and masks): **IGNORE**, no loss.

Classes are the baseline's (``networks.baseline``: 0 background, 1 interior, 2 boundary), so one 3-class
network serves both, and PlantSeg-style wall maps come out of the boundary channel. Written here because neither
MONAI nor scikit-image builds partial targets: both assume every voxel is labelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BACKGROUND, INTERIOR, WALL = 0, 1, 2
IGNORE = 255  # the label of voxels the weak annotation says nothing about (``MaskedWallLoss`` skips them)
CORE_FRACTION = 0.5


def mask_surface(instances: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` bool: labelled voxels with a face neighbour of another value (another cell or background)."""
    inst = np.asarray(instances)
    surface = np.zeros(inst.shape, dtype=bool)
    for axis in range(inst.ndim):
        lo = [slice(None)] * inst.ndim
        hi = [slice(None)] * inst.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        differ = inst[tuple(lo)] != inst[tuple(hi)]
        surface[tuple(lo)] |= differ
        surface[tuple(hi)] |= differ
    return surface & (inst > 0)


def box_cores(boxes: np.ndarray, shape: Sequence[int], core_fraction: float = CORE_FRACTION) -> np.ndarray:
    """``(X, Y, Z)`` bool: for each ``(K, 6)`` box (voxels, half-open), the ellipsoid centred in it with semi-axes
    ``core_fraction`` x half its extent per axis (at least the centre voxel)."""
    core = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 6):
        centre = (box[:3] + box[3:]) / 2
        semi = np.maximum(core_fraction * (box[3:] - box[:3]) / 2, 0.5)
        lo = np.clip(np.floor(centre - semi).astype(int), 0, core.shape)
        hi = np.clip(np.ceil(centre + semi).astype(int), 0, core.shape)
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(lo[a], hi[a]) + 0.5 for a in range(3)], indexing="ij")
        inside = sum(((grids[a] - centre[a]) / semi[a]) ** 2 for a in range(3))
        core[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= inside <= 1.0
    return core


def weak_wall_classes(
    instances: np.ndarray,
    boxes: np.ndarray,
    annotated: np.ndarray,
    instance_ids: np.ndarray | None = None,
    core_fraction: float = CORE_FRACTION,
) -> np.ndarray:
    """``(X, Y, Z)`` uint8 classes (``BACKGROUND`` / ``INTERIOR`` / ``WALL`` / ``IGNORE``) from weak annotation.

    Args:
        instances: ``(X, Y, Z)`` labels of the annotated masks (other cells may be 0 or labelled: only the ids of
            annotated boxes count as masks).
        boxes: ``(K, 6)`` boxes of every cell, voxels, half-open ``[x0, y0, z0, x1, y1, z1)``.
        annotated: ``(K,)`` whether box k has a voxel mask.
        instance_ids: ``(K,)`` the label of box k in ``instances`` (default ``k + 1``).
    """
    inst = np.asarray(instances)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    annotated = np.asarray(annotated, dtype=bool).reshape(-1)
    ids = np.arange(1, len(boxes) + 1) if instance_ids is None else np.asarray(instance_ids).reshape(-1)
    classes = np.full(inst.shape, IGNORE, dtype=np.uint8)
    in_a_box = np.zeros(inst.shape, dtype=bool)
    for box in boxes:
        lo = np.clip(np.floor(box[:3]).astype(int), 0, inst.shape)
        hi = np.clip(np.ceil(box[3:]).astype(int), 0, inst.shape)
        in_a_box[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    classes[~in_a_box] = BACKGROUND
    classes[box_cores(boxes[~annotated], inst.shape, core_fraction)] = INTERIOR
    masks = np.where(np.isin(inst, ids[annotated]), inst, 0)
    classes[masks > 0] = INTERIOR
    classes[mask_surface(masks)] = WALL
    return classes


__all__ = ["BACKGROUND", "IGNORE", "INTERIOR", "WALL", "box_cores", "mask_surface", "weak_wall_classes"]
