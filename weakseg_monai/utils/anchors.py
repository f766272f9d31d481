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
    shapes = np.unique(np.maximum(2.0 * np.floor(np.exp(centres) / 2.0 + 0.5), 2.0), axis=0)  # nearest even
    order = np.argsort(shapes.prod(axis=1), kind="stable")
    return shapes[order].tolist()


def anchor_centres(size: int, stride: int) -> np.ndarray:
    """Anchor centres along one axis of a volume of ``size`` voxels (padded to the stride): ``i * stride +
    stride // 2``, MONAI's placement (``AnchorGeneratorWithAnchorShape``)."""
    return np.arange(int(np.ceil(size / stride))) * stride + stride // 2


def best_anchor_iou(
    boxes: np.ndarray, anchor_shapes: Sequence[Sequence[float]], stride: Sequence[int], spatial: Sequence[int]
) -> np.ndarray:
    """``(G,)`` the highest IoU of each ``(G, 6)`` box of a volume of ``spatial`` voxels with any anchor of the grid
    (every shape at every centre of the detection level of ``stride``): what the matcher sees, without building the
    ``prod(spatial / stride) * R`` anchors of a large volume (only the centres next to each box are tried).

    Anchor sizes are even (``anchor_shapes_from_boxes``), so an anchor spans ``centre -/+ size / 2`` exactly."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    sizes = np.asarray(anchor_shapes, dtype=np.float64).reshape(-1, 3)
    if len(b) == 0:
        return np.zeros(0)
    overlaps = []  # per axis: (G, R, K) overlap of the box with anchors at K candidate centres
    for axis in range(3):
        centres = anchor_centres(int(spatial[axis]), int(stride[axis]))
        middle = (b[:, axis] + b[:, axis + 3]) / 2
        nearest = np.clip(np.round((middle - stride[axis] // 2) / stride[axis]).astype(int), 0, len(centres) - 1)
        index = np.clip(nearest[:, None] + np.arange(-2, 3)[None, :], 0, len(centres) - 1)  # (G, 5)
        c = centres[index][:, None, :]  # (G, 1, 5)
        half = sizes[None, :, axis, None] / 2  # (1, R, 1)
        low = np.maximum(b[:, None, None, axis], c - half)
        high = np.minimum(b[:, None, None, axis + 3], c + half)
        overlaps.append(np.clip(high - low, 0, None))  # (G, R, 5)
    inter = overlaps[0][..., :, None, None] * overlaps[1][..., None, :, None] * overlaps[2][..., None, None, :]
    box_volume = np.prod(b[:, 3:] - b[:, :3], axis=1)[:, None, None, None, None]
    anchor_volume = np.prod(sizes, axis=1)[None, :, None, None, None]
    iou = inter / (box_volume + anchor_volume - inter)
    return iou.reshape(len(b), -1).max(axis=1)


def anchor_hits(
    volumes: Sequence[tuple[np.ndarray, Sequence[int]]],
    anchor_shapes: Sequence[Sequence[float]],
    stride: Sequence[int],
    positive_iou: float = 0.4,
) -> np.ndarray:
    """``(G,)`` bool over the boxes of all ``volumes`` (``(boxes (G_i, 6), padded spatial size)`` pairs, in order):
    which boxes some anchor matches above ``positive_iou``, i.e. which get an anchor the matcher calls positive."""
    hits = [best_anchor_iou(boxes, anchor_shapes, stride, spatial) > positive_iou for boxes, spatial in volumes]
    return np.concatenate(hits) if hits else np.zeros(0, dtype=bool)


def anchor_shapes_covering(
    volumes: Sequence[tuple[np.ndarray, Sequence[int]]],
    base_shapes: Sequence[Sequence[float]],
    stride: Sequence[int],
    groups: Sequence[np.ndarray],
    positive_iou: float = 0.4,
    min_share: float = 0.95,
    max_shapes: int = 9,
    candidates: int = 48,
    seed: int = 0,
) -> list[list[float]]:
    """``base_shapes`` plus, greedily, the shapes that give the most still-unmatched target boxes a positive anchor,
    until ``min_share`` of every group of targets (``(G,)`` bool masks over the boxes of ``volumes``, e.g. the
    face-cut and the whole objects) has one, or ``max_shapes`` are reached. Candidates are the even-rounded sizes
    of unmatched targets (at most ``candidates`` of them).

    Why: k-means of the sizes serves the typical (whole) object; a volume's faces cut objects into slivers thin in
    one or two axes, which no typical anchor matches (IoU <= 0.4), so the detector hardly learns them."""
    shapes = [[float(v) for v in s] for s in base_shapes]
    boxes = np.concatenate([b.reshape(-1, 6) for b, _ in volumes]) if volumes else np.zeros((0, 6))
    groups = [g for g in groups if g.any()]
    rng = np.random.default_rng(seed)
    hit = anchor_hits(volumes, shapes, stride, positive_iou)
    while len(shapes) < max_shapes:
        short = [g for g in groups if hit[g].mean() < min_share]
        if not short:
            break
        wanted = np.logical_or.reduce(short) & ~hit
        open_boxes = boxes[wanted]
        sizes = np.unique(np.maximum(2.0 * np.floor((open_boxes[:, 3:] - open_boxes[:, :3]) / 2.0 + 0.5), 2.0), axis=0)
        if len(sizes) > candidates:
            sizes = sizes[rng.choice(len(sizes), candidates, replace=False)]
        gains = [int((anchor_hits(volumes, [size], stride, positive_iou) & wanted).sum()) for size in sizes]
        if not gains or max(gains) == 0:
            break
        best = sizes[int(np.argmax(gains))]
        shapes.append(best.tolist())
        hit |= anchor_hits(volumes, [best], stride, positive_iou)
    return shapes
