"""Second stage for a wall map: seeded watershed into instances that follow the walls (issue 25).

Input: per-voxel probabilities of background, interior and wall (the classes of ``data.wall_targets``, softmax of a
3-class dense network). Seeds are the connected interior cores (eroded, so a one-voxel gap in a predicted wall does
not merge two cells) or labels the caller gives (e.g. from detections); the wall probability is the elevation the
seeds flood (scikit-image's ``watershed``), inside the voxels that are not background. PlantSeg's second stage is
the same idea on a boundary map (watershed, then GASP or multicut); the plain seeded watershed is what the weak
targets support, and what the classical row of ``scripts/membrane_ceiling.py`` measured on the raw image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from weakseg_monai.data.instances import relabel_consecutive
from weakseg_monai.data.wall_targets import BACKGROUND, INTERIOR, WALL


def interior_seeds(interior: np.ndarray, threshold: float = 0.5, erode: int = 1, min_voxels: int = 10) -> np.ndarray:
    """``(X, Y, Z)`` int32 seeds 1..n: 6-connected components of ``interior > threshold`` after ``erode`` erosions;
    components under ``min_voxels`` dropped."""
    core = np.asarray(interior) > threshold
    if erode:
        core = ndimage.binary_erosion(core, structure=ndimage.generate_binary_structure(3, 1), iterations=erode)
    seeds, n = ndimage.label(core)
    keep = np.bincount(seeds.ravel(), minlength=n + 1) >= min_voxels
    keep[0] = False
    return relabel_consecutive(np.where(keep[seeds], seeds, 0))


def wall_watershed(
    probabilities: np.ndarray,
    seeds: np.ndarray | None = None,
    foreground_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    seed_erode: int = 1,
    min_voxels: int = 10,
) -> np.ndarray:
    """``(3, X, Y, Z)`` probabilities (background, interior, wall) -> ``(X, Y, Z)`` int32 instances 1..n.

    ``seeds``: ``(X, Y, Z)`` labels to flood from (default ``interior_seeds`` of the interior channel). Voxels whose
    background probability is at least ``1 - foreground_threshold`` stay 0; seeds with no foreground voxel vanish.
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    if probs.shape[0] != 3:
        raise ValueError(f"wall_watershed takes (3, X, Y, Z) probabilities (background, interior, wall), got "
                         f"{probs.shape}")
    foreground = probs[BACKGROUND] < 1.0 - foreground_threshold
    if seeds is None:
        seeds = interior_seeds(probs[INTERIOR], seed_threshold, seed_erode, min_voxels)
    seeds = np.where(foreground, np.asarray(seeds, dtype=np.int32), 0)
    if not seeds.any():
        return np.zeros(probs.shape[1:], dtype=np.int32)
    return relabel_consecutive(watershed(probs[WALL], markers=seeds, mask=foreground))


__all__ = ["interior_seeds", "wall_watershed"]
