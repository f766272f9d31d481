"""Dataset fingerprint: what a training plan needs to know about a weak-annotation dataset.

Read from the datalist and the training volumes (nnU-Net's "fingerprint" idea): spacings, volume sizes,
object sizes in µm, counts, how much the ground-truth boxes overlap, and intensity statistics. Every
spatial value is (x, y, z).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data.box_utils import box_iou

from weakseg_monai.data.datalist import load_section
from weakseg_monai.data.io import read_volume, resolve_spacing, volume_shape
from weakseg_monai.data.validate import duplicate_boxes
from weakseg_monai.transforms.dictionary import working_shape
from weakseg_monai.utils.boxes import touches_face

logger = logging.getLogger(__name__)

MAX_INTENSITY_VOLUMES = 8  # intensity statistics from at most this many training volumes
MIN_CORE_VOXELS = 3  # boxes thinner than this in some axis have no central third to measure
MIN_RIM_VOXELS = 9  # boxes narrower than this in x or y have no rim to compare their core with
MIN_WHOLE_OBJECTS = 10  # object sizes come from the objects no face cuts when there are at least this many


@dataclass(frozen=True)
class DatasetFingerprint:
    """Summary of a dataset's training section (plus the size of its validation section).

    Attributes:
        n_volumes, n_validation: training / validation items.
        n_objects, n_masked: boxes and boxes with a voxel mask in the training items.
        spacing_um: median voxel size (x, y, z).
        volume_voxels: median volume size (x, y, z) in voxels; volume_um: the same in µm.
        object_um_median, object_um_p10, object_um_p90: box sizes (x, y, z) in µm.
        box_overlap_p95: 95th percentile over boxes of the largest IoU with another box of the same volume
            (touching / overlapping objects; 0 for well separated ones).
        object_volume_fraction: summed box volume x pi/6 (the ellipsoid in a box) over the volume's.
        intensity: dtype and (p1, p50, p99.8) of the training volumes read.
        object_core_contrast: median over boxes of (mean of the box's central third - the volume's median) /
            (its p99.8 - p1): how much brighter objects are inside than the volume at large. Filled nuclei
            measure 0.28-0.60 on the generalisation suite; a cell-wall / membrane stain (dark interiors in a
            tissue that is all cells) 0.08. ``None`` when no box was measurable.
        object_core_rim_contrast: median over boxes of (mean of the central third - mean of the box outside its
            central two thirds) / (p99.8 - p1): positive for filled objects (a bright core, a dim edge and
            background around it), negative for a wall stain (a dark interior inside its bright wall), whatever
            the share of background in the volume. ``None`` when no box was measurable.
        n_face_cut: boxes with a voxel on a face of their volume (only their visible part is boxed).
        largest_volume_um3: the largest training volume's extent in µm³ (bounds the working grid).
        object_sizes_from: "whole" when the object sizes above come from the objects no face cuts (at least
            ``MIN_WHOLE_OBJECTS`` of them), else "all": a face-cut sliver says nothing about an object's size.
    """

    n_volumes: int
    n_validation: int
    n_objects: int
    n_masked: int
    spacing_um: tuple[float, float, float]
    volume_voxels: tuple[int, int, int]
    volume_um: tuple[float, float, float]
    object_um_median: tuple[float, float, float]
    object_um_p10: tuple[float, float, float]
    object_um_p90: tuple[float, float, float]
    box_overlap_p95: float
    object_volume_fraction: float
    intensity: dict
    object_core_contrast: float | None = None
    object_core_rim_contrast: float | None = None
    n_face_cut: int = 0
    object_sizes_from: str = "all"
    largest_volume_um3: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VolumeBoxes:
    """One training volume's boxes ``(G, 6)`` (voxels), its size (x, y, z) voxels and spacing (x, y, z) µm."""

    boxes: np.ndarray
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def face_cut(self) -> np.ndarray:
        return touches_face(self.boxes, self.shape)

    def at_spacing(self, working_spacing) -> VolumeBoxes:
        """The same boxes and volume at ``working_spacing`` (the edge-aligned grid of ``working_shape``)."""
        shape, zoom = working_shape(self.shape, self.spacing, working_spacing)
        return VolumeBoxes(self.boxes * np.tile(zoom, 2), tuple(int(v) for v in shape), tuple(working_spacing))


def training_volumes(dataset_dir: str | Path) -> list[VolumeBoxes]:
    """Boxes, size and spacing of every training item (sizes from the file headers where the format allows);
    duplicate boxes (IoU >= 0.95 within an item) are counted once."""
    volumes = []
    for item in load_section(dataset_dir, "training"):
        boxes = np.asarray(item.get("box", []), dtype=np.float64).reshape(-1, 6)
        twins = {j for _, j in duplicate_boxes(boxes)} if len(boxes) > 1 else set()
        if twins:  # one object annotated twice counts once (``validate`` warns about it)
            boxes = boxes[[k for k in range(len(boxes)) if k not in twins]]
        spacing = tuple(float(v) for v in resolve_spacing(item["image"], item.get("spacing")))
        volumes.append(VolumeBoxes(boxes, volume_shape(item["image"]), spacing))  # type: ignore[arg-type]
    return volumes


def _max_other_iou(boxes: np.ndarray) -> np.ndarray:
    """For each ``(N, 6)`` box, the largest IoU with any other box of the set."""
    if len(boxes) < 2:
        return np.zeros(len(boxes))
    iou = box_iou(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(boxes, dtype=torch.float32))
    iou.fill_diagonal_(0.0)
    return iou.max(dim=1).values.numpy()


def dataset_fingerprint(dataset_dir: str | Path, volumes: list[VolumeBoxes] | None = None) -> DatasetFingerprint:
    """Fingerprint of the ``training`` section of ``dataset_dir`` (a folder with ``datalist.json``); ``volumes``:
    its ``training_volumes`` when already read."""
    items = load_section(dataset_dir, "training")
    if not items:
        raise ValueError(f"{dataset_dir}: the datalist has no 'training' items to plan from")
    volumes = training_volumes(dataset_dir) if volumes is None else volumes
    sizes_um, whole, overlaps, fractions, masked = [], [], [], [], 0
    dtypes, samples, core_contrasts = set(), [], []
    for index, (item, volume) in enumerate(zip(items, volumes)):
        boxes, shape = volume.boxes, np.asarray(volume.shape, dtype=np.float64)
        sizes_um.append((boxes[:, 3:] - boxes[:, :3]) * np.asarray(volume.spacing))
        whole.append(~volume.face_cut())
        overlaps.append(_max_other_iou(boxes))
        fractions.append(float(np.prod(boxes[:, 3:] - boxes[:, :3], axis=1).sum() * np.pi / 6 / np.prod(shape)))
        masked += int(np.asarray(item.get("mask_annotated", []), dtype=bool).sum())
        if index < MAX_INTENSITY_VOLUMES:
            image = read_volume(item["image"])
            dtypes.add(str(image.dtype))
            flat = image.ravel()
            samples.append(flat[:: max(1, flat.size // 200_000)].astype(np.float64))
            core_contrasts.extend(_core_contrasts(image, boxes, samples[-1]))
    sizes = np.concatenate(sizes_um) if sizes_um else np.zeros((0, 3))
    if len(sizes) == 0:
        raise ValueError(f"{dataset_dir}: the training items have no boxes to plan from")
    is_whole = np.concatenate(whole)
    sized = sizes[is_whole] if is_whole.sum() >= MIN_WHOLE_OBJECTS else sizes
    median_spacing = np.median(np.stack([v.spacing for v in volumes]), axis=0)
    median_shape = np.median(np.stack([v.shape for v in volumes]), axis=0)
    p1, p50, p998 = np.percentile(np.concatenate(samples), [1.0, 50.0, 99.8])
    return DatasetFingerprint(
        n_volumes=len(items),
        n_validation=len(load_section(dataset_dir, "validation")),
        n_objects=int(len(sizes)),
        n_masked=masked,
        spacing_um=_triple(median_spacing),
        volume_voxels=tuple(int(v) for v in median_shape),  # type: ignore[arg-type]
        volume_um=_triple(median_shape * median_spacing),
        object_um_median=_triple(np.median(sized, axis=0)),
        object_um_p10=_triple(np.percentile(sized, 10, axis=0)),
        object_um_p90=_triple(np.percentile(sized, 90, axis=0)),
        box_overlap_p95=round(float(np.percentile(np.concatenate(overlaps), 95)), 4),
        object_volume_fraction=round(float(np.median(fractions)), 4),
        intensity={"dtype": sorted(dtypes), "p1": float(p1), "p50": float(p50), "p99.8": float(p998)},
        object_core_contrast=_median_of(core_contrasts, 0),
        object_core_rim_contrast=_median_of(core_contrasts, 1),
        n_face_cut=int((~is_whole).sum()),
        object_sizes_from="whole" if sized is not sizes else "all",
        largest_volume_um3=round(max(float(np.prod(np.asarray(v.shape) * np.asarray(v.spacing))) for v in volumes), 1),
    )


def _core_contrasts(volume: np.ndarray, boxes: np.ndarray, sample: np.ndarray) -> list[tuple[float, float]]:
    """Per ``(N, 6)`` voxel box of ``volume (X, Y, Z)``, in units of (p99.8 - p1) of ``sample`` (a subsample of the
    volume): (mean of its central third - the volume's median, mean of that core - mean of the box's rim).

    The rim is the box outside its central two thirds: where a cell's own wall lies, and a nucleus' dim edge and the
    background around it. NaN for the second value when the box is under ``MIN_RIM_VOXELS`` in x or y."""
    low, median, high = np.percentile(sample, [1.0, 50.0, 99.8])
    if high <= low:
        return []
    values = []
    for box in np.round(boxes).astype(np.int64):
        size = box[3:] - box[:3]
        if (size < MIN_CORE_VOXELS).any():
            continue
        inside = volume[box[0] : box[3], box[1] : box[4], box[2] : box[5]].astype(np.float64)
        lo, hi = size // 3, size - size // 3
        core = inside[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        inner = size // 6, size - size // 6
        rim = np.ones(inside.shape, dtype=bool)
        rim[inner[0][0] : inner[1][0], inner[0][1] : inner[1][1], inner[0][2] : inner[1][2]] = False
        if not core.size:
            continue
        core_contrast = (core.mean() - median) / (high - low)
        # the rim needs room in-plane: in a box under MIN_RIM_VOXELS a blurred nucleus fills its rim too
        measurable = rim.any() and (size[:2] >= MIN_RIM_VOXELS).all()
        values.append((core_contrast, (core.mean() - inside[rim].mean()) / (high - low) if measurable else np.nan))
    return values


def _median_of(pairs: list[tuple[float, float]], index: int) -> float | None:
    """The median of the measurable (not NaN) values at ``index``; None when there are none."""
    values = [p[index] for p in pairs if not np.isnan(p[index])]
    return round(float(np.median(values)), 4) if values else None


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return tuple(round(float(v), 4) for v in values)  # type: ignore[return-value]
