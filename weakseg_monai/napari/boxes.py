"""The boxes of one volume as the plugin keeps them: pure numpy, no napari.

``WeakBoxes`` is the source of truth of a boxes layer: an ``(N, 6)`` array of our half-open (x, y, z) boxes
``[x0, y0, z0, x1, y1, z1)`` with ``label`` and ``mask_annotated`` per box, as in the datalist; mask value k marks
the voxels of box k - 1. The functions below are the annotation rules (a drawn rectangle becomes a box, a key sets
a z end, a painted mask grows or fits its box, a removed box renumbers the mask), each testable on arrays alone.

A voxel i spans [i, i + 1) in box coordinates and is centred at i in napari, so a box edge e is drawn at e - 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from weakseg_monai.conventions import as_boxes, as_spacing

PIXEL_CENTRE = 0.5  # a box edge e is drawn at e - PIXEL_CENTRE in napari's pixel-centred coordinates


@dataclass
class WeakBoxes:
    """Boxes ``(N, 6)`` (x, y, z) half-open, with ``label`` ``(N,)`` and ``mask_annotated`` ``(N,)`` per box."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mask_annotated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        self.boxes = as_boxes(self.boxes).copy()
        n = len(self.boxes)
        self.label = np.zeros(n, dtype=np.int64) if self.label is None else np.asarray(self.label, dtype=np.int64)
        flags = np.zeros(n, dtype=bool) if self.mask_annotated is None else self.mask_annotated
        self.mask_annotated = np.asarray(flags, dtype=bool).copy()
        if len(self.label) != n or len(self.mask_annotated) != n:
            raise ValueError(f"{n} boxes but {len(self.label)} labels and {len(self.mask_annotated)} mask flags")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_item(cls, item: dict) -> WeakBoxes:
        """The ``box`` / ``label`` / ``mask_annotated`` fields of a datalist item (labels 0 and flags false when
        missing)."""
        boxes = as_boxes(item.get("box") or [])
        n = len(boxes)
        return cls(boxes, item.get("label", [0] * n), item.get("mask_annotated", [False] * n))

    def item_fields(self) -> dict:
        """``box``, ``label``, ``mask_annotated`` as the datalist writes them (whole coordinates as ints)."""
        return {
            "box": [[_plain_number(v) for v in box] for box in self.boxes],
            "label": [int(v) for v in self.label],
            "mask_annotated": [bool(v) for v in self.mask_annotated],
        }

    def append(self, box: Sequence[float], label: int = 0, annotated: bool = False) -> int:
        """Add one box; returns its index k (its mask value is k + 1)."""
        self.boxes = np.concatenate([self.boxes, as_boxes([box])])
        self.label = np.append(self.label, int(label))
        self.mask_annotated = np.append(self.mask_annotated, bool(annotated))
        return len(self.boxes) - 1

    def copy(self) -> WeakBoxes:
        return WeakBoxes(self.boxes.copy(), self.label.copy(), self.mask_annotated.copy())


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def clamp_box(box: Sequence[float], shape_xyz: Sequence[int]) -> np.ndarray:
    """``box`` inside the image ``[0, shape)``, at least one voxel along each axis."""
    box = np.asarray(box, dtype=np.float64).copy()
    shape = np.asarray(shape_xyz, dtype=np.float64)
    box[:3] = np.clip(box[:3], 0, shape - 1)
    box[3:] = np.clip(np.maximum(box[3:], box[:3] + 1), 1, shape)
    return box


def rectangle_to_xy(vertices_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-open whole-voxel (x0, y0), (x1, y1) of a drawn rectangle's ``(4, 3)`` (x, y, z) vertices."""
    vertices = np.asarray(vertices_xyz, dtype=np.float64)
    low = np.round(vertices[:, :2].min(axis=0) + PIXEL_CENTRE)
    high = np.round(vertices[:, :2].max(axis=0) + PIXEL_CENTRE)
    return low, np.maximum(high, low + 1)


def default_depth(width_voxels: Sequence[float], spacing: Sequence[float], boxes: np.ndarray) -> int:
    """z extent in voxels for a new box ``width_voxels`` (x, y) wide: the median depth-to-width ratio (in µm) of
    the boxes drawn so far, or round (as deep as it is wide) when there are none."""
    sx, sy, sz = as_spacing(spacing)
    width_um = float(np.mean([width_voxels[0] * sx, width_voxels[1] * sy]))
    ratio = 1.0
    if len(boxes):
        sizes = (boxes[:, 3:] - boxes[:, :3]) * np.array([sx, sy, sz])
        ratio = float(np.median(sizes[:, 2] / sizes[:, :2].mean(axis=1)))
    return max(1, int(round(ratio * width_um / sz)))


def box_from_rectangle(
    vertices_xyz: np.ndarray, shape_xyz: Sequence[int], spacing: Sequence[float], existing: np.ndarray
) -> np.ndarray:
    """Gesture 1: a rectangle drawn on slice z becomes a box with that x/y extent and a z extent centred on z, as
    deep as ``default_depth`` (the median shape of the boxes so far, or round), inside the image."""
    (x0, y0), (x1, y1) = rectangle_to_xy(vertices_xyz)
    z = float(np.round(np.asarray(vertices_xyz, dtype=np.float64)[:, 2].mean()))
    depth = default_depth((x1 - x0, y1 - y0), spacing, existing)
    z0 = z - (depth - 1) // 2
    return clamp_box([x0, y0, z0, x1, y1, z0 + depth], shape_xyz)


def with_z_end_at(box: Sequence[float], z_slice: int, shape_xyz: Sequence[int]) -> np.ndarray:
    """Gestures 2 and 3: put the nearer z end of ``box`` on slice ``z_slice`` (below the centre: ``z0 = z``, else
    ``z1 = z + 1``), growing or shrinking it; pressed on the first and on the last slice of a nucleus, the box
    spans exactly those slices."""
    box = np.asarray(box, dtype=np.float64).copy()
    if z_slice < (box[2] + box[5]) / 2 - PIXEL_CENTRE:
        box[2] = z_slice
    else:
        box[5] = z_slice + 1
    return clamp_box(box, shape_xyz)


def with_xy_from_rectangle(box: Sequence[float], vertices_xyz: np.ndarray, shape_xyz: Sequence[int]) -> np.ndarray:
    """An edited rectangle (moved or resized on any slice of the box) sets the box's x / y extent, keeps its z."""
    box = np.asarray(box, dtype=np.float64).copy()
    (box[0], box[1]), (box[3], box[4]) = rectangle_to_xy(vertices_xyz)
    return clamp_box(box, shape_xyz)


def box_slices(box: Sequence[float]) -> range:
    """The z slices a box covers (every voxel slice it touches)."""
    return range(int(np.floor(box[2])), int(np.ceil(box[5])))


def rectangle_of(box: Sequence[float], z: float) -> np.ndarray:
    """The rectangle drawn for ``box`` on slice ``z``: ``(4, 3)`` (x, y, z) vertices at napari's pixel-centred
    positions."""
    x0, y0, _, x1, y1, _ = np.asarray(box, dtype=np.float64) - PIXEL_CENTRE
    return np.array([[x0, y0, z], [x0, y1, z], [x1, y1, z], [x1, y0, z]], dtype=np.float64)


def rectangles(boxes: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The view of ``boxes``: one rectangle per box and z slice it covers (``rectangle_of``), and the box index
    of each rectangle."""
    pairs = [(rectangle_of(box, z), k) for k, box in enumerate(np.reshape(boxes, (-1, 6))) for z in box_slices(box)]
    return [v for v, _ in pairs], np.asarray([k for _, k in pairs], dtype=np.int64)


def mask_extents(mask: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """For k < n: the half-open voxel extent ``(low, high)`` of mask value k + 1, or None without voxels."""
    found = ndimage.find_objects(np.asarray(mask).astype(np.int64, copy=False), max_label=n) if n else []
    return [None if s is None else (np.array([v.start for v in s]), np.array([v.stop for v in s])) for s in found]


def adopt_new_mask_values(weak: WeakBoxes, mask: np.ndarray) -> WeakBoxes:
    """Mask values above the last box (painted with a fresh label) become new boxes, numbered on from N + 1 in the
    order of their values; ``mask`` is relabelled in place so value k still marks box k - 1."""
    weak = weak.copy()
    values = np.unique(mask[mask > len(weak)])
    for value in values:
        voxels = mask == value
        mask[voxels] = len(weak) + 1
        where = np.nonzero(voxels)
        weak.append([*(c.min() for c in where), *(c.max() + 1 for c in where)], annotated=True)
    return weak


def grow_to_mask(weak: WeakBoxes, mask: np.ndarray) -> WeakBoxes:
    """After painting: a box grows to hold every voxel of its mask value, ``mask_annotated`` is true exactly where
    the mask has voxels, and values above the last box become new boxes (``adopt_new_mask_values``)."""
    weak = adopt_new_mask_values(weak, mask)
    for k, extent in enumerate(mask_extents(mask, len(weak))):
        weak.mask_annotated[k] = extent is not None
        if extent is not None:
            low, high = extent
            weak.boxes[k, :3] = np.minimum(weak.boxes[k, :3], low)
            weak.boxes[k, 3:] = np.maximum(weak.boxes[k, 3:], high)
    return weak


def fit_to_mask(weak: WeakBoxes, mask: np.ndarray, indices: Sequence[int]) -> WeakBoxes:
    """Box k becomes the extent of its painted voxels (smaller or larger), for each k in ``indices`` that has
    voxels; the others are left as they are."""
    weak = weak.copy()
    extents = mask_extents(mask, len(weak))
    for k in indices:
        if extents[k] is not None:
            weak.boxes[k] = np.concatenate(extents[k])
            weak.mask_annotated[k] = True
    return weak


def remove_boxes(weak: WeakBoxes, indices: Sequence[int], mask: np.ndarray | None = None) -> WeakBoxes:
    """Drop boxes ``indices``; their mask voxels are cleared and the later mask values move down (in place), so
    value k still marks box k - 1."""
    drop = np.zeros(len(weak), dtype=bool)
    drop[list(indices)] = True
    if mask is not None and drop.any():
        new_value = np.zeros(len(weak) + 1, dtype=np.int64)
        new_value[1:][~drop] = np.arange(1, int((~drop).sum()) + 1)
        inside = mask <= len(weak)
        mask[inside] = new_value[mask[inside].astype(np.int64)].astype(mask.dtype)
    return WeakBoxes(weak.boxes[~drop], weak.label[~drop], weak.mask_annotated[~drop])
