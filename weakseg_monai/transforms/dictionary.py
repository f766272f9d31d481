"""Dictionary transforms that MONAI lacks for weak annotation; the rest of the pipeline is MONAI's own
(``SpatialPadd``, ``monai.apps.detection.transforms`` crops, flips, rotations, zoom and ``ClipBoxToImaged``).

Keys produced by ``LoadWeakAnnotationd`` (all spatial values (x, y, z), boxes StandardMode in voxels):

- ``image``: ``(1, X, Y, Z)`` float32 tensor;
- ``instances``: ``(1, X, Y, Z)`` int32, value = ``instance_id`` of an annotated instance, 0 elsewhere;
- ``box (G, 6)`` float32, ``label (G,)`` int64, ``mask_annotated (G,)`` uint8, ``instance_id (G,)`` int64,
  ``box_volume (G,)`` float32 (the whole box's volume in the current voxels, kept up to date by
  ``InputRuled`` and ``RandZoomBoxVolumed``, for ``MarkCutBoxesd``);
- ``spacing``: the input's (x, y, z) spacing in µm by the project's spacing rule.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.apps.detection.transforms.dictionary import RandCropBoxByPosNegLabeld, RandRotateBox90d, RandZoomBoxd
from monai.config import KeysCollection
from monai.data.box_utils import spatial_crop_boxes
from monai.transforms import MapTransform, RandomizableTransform
from monai.transforms.utils import map_binary_to_indices
from monai.utils import ensure_tuple

from weakseg_monai.conventions import as_boxes, as_fraction, as_spacing
from weakseg_monai.data.datalist import partial_mask_from_instances, select_annotated
from weakseg_monai.data.io import read_volume, resolve_spacing
from weakseg_monai.data.validate import DatasetError, check_item, raise_for_problems
from weakseg_monai.data.wall_targets import weak_wall_classes
from weakseg_monai.transforms.faces import MIN_CUT_EXTENT, mirror_boxes, mirror_faces, model_face_pads

logger = logging.getLogger(__name__)


def _per_box(d: Mapping, key: str, n: int, default, dtype) -> np.ndarray:
    values = d.get(key)
    return np.full(n, default, dtype=dtype) if values is None else np.asarray(values, dtype=dtype).reshape(n)


class LoadWeakAnnotationd(MapTransform):
    """Load one datalist item (paths already absolute) into image, instance volume and per-box arrays.

    Reads through ``weakseg_monai.data.io.read_volume`` (MONAI ``LoadImage`` for NIfTI, the equivalent fast
    tifffile path for TIFF; (x, y, z) either way), the one reader of the project; the spacing follows the
    project's rule.
    The item's fields are checked first with the validator's own checks, so a bad item fails here with
    the validator's message.

    Args:
        mask_fraction: ``None`` uses the item's ``mask`` as annotated. A number in [0, 1] simulates that
            fraction from ``gt_instances`` (seeded, nested, see ``select_annotated``) where the item has them;
            items without ``gt_instances`` keep their own ``mask``.
        seed: seed of the simulated choice.
        load_gt: also load ``gt_instances`` (for scoring) into key ``gt_instances``.
    """

    def __init__(self, mask_fraction: float | None = None, seed: int = 0, load_gt: bool = False) -> None:
        super().__init__(keys=["image"])
        self.mask_fraction = mask_fraction
        self.seed = seed
        self.load_gt = load_gt

    @staticmethod
    def _read(path: str) -> torch.Tensor:
        """``(1, X, Y, Z)`` (or ``(1, X, Y)`` / ``(1, X, Y, Z, C)`` for bad inputs, rejected by the caller)."""
        return torch.from_numpy(np.ascontiguousarray(read_volume(path)))[None]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        name = str(d.get("id", d.get("image")))
        raise_for_problems(check_item(d, where=f"item {name}", read_volumes=False))
        image_path = str(d["image"])
        image = self._read(image_path)
        if image.ndim != 4:
            raise ValueError(f"item {name}: image must be a single-channel 3D volume, got shape {tuple(image.shape)}")
        spatial = tuple(image.shape[1:])
        try:
            boxes = as_boxes(d.get("box", []), spatial).astype(np.float32)
        except ValueError as err:
            raise DatasetError(f"item {name} field 'box' [{image_path}]: {err}") from err
        n = len(boxes)
        flags = _per_box(d, "mask_annotated", n, False, bool)
        instances = None
        gt = None
        if d.get("gt_instances") and (self.load_gt or self.mask_fraction is not None):
            gt = np.asarray(self._read(str(d["gt_instances"]))[0]).astype(np.int32)
        if self.mask_fraction is not None and gt is not None:
            flags = select_annotated(n, float(self.mask_fraction), self.seed, name)
            instances = partial_mask_from_instances(gt, flags)
        elif d.get("mask") and flags.any():
            instances = np.asarray(self._read(str(d["mask"]))[0]).astype(np.int32)
        if instances is None:
            instances = np.zeros(spatial, dtype=np.int32)
        if instances.shape != spatial:
            raise ValueError(f"item {name}: mask shape {instances.shape} differs from the image {spatial}")

        d["image"] = torch.from_numpy(finite_float32(image.numpy(), image_path))
        d["instances"] = torch.from_numpy(instances[None])
        if self.load_gt and gt is not None:
            d["gt_instances"] = torch.from_numpy(gt[None])
        d["box"] = boxes
        d["label"] = _per_box(d, "label", n, 0, np.int64)
        d["mask_annotated"] = flags.astype(np.uint8)
        d["instance_id"] = np.arange(1, n + 1, dtype=np.int64)
        d["box_volume"] = np.prod(boxes[:, 3:] - boxes[:, :3], axis=1).astype(np.float32)
        d["spacing"] = resolve_spacing(image_path, d.get("spacing"))
        d["original_shape"] = spatial
        return d


def aligned_size(size: float, multiple: int, tolerance: float = 0.1) -> int:
    """``size`` rounded to a whole number of ``multiple`` (the detection level's stride) when that moves it by at
    most ``tolerance`` of itself, else to the nearest voxel (``working_size``). Used for the blocks of blockwise
    inference (``InputRule.block_shape``), not for whole volumes (``working_shape``).

    Why: anchors sit at ``i * stride + stride // 2``, so with the size a multiple of the stride the far face of the
    volume lies on the anchor grid as the near face does, and an object the far face cuts to a thin sliver has an
    anchor that fits it (off the grid, a 3-voxel sliver can stay below the matcher's IoU with every anchor)."""
    plain = working_size(size)
    snapped = working_size(size / multiple) * multiple  # the same tie rule, in strides (at least one)
    return snapped if abs(snapped - size) <= tolerance * size else plain


def working_size(size: float) -> int:
    """``size`` (voxels, a float) rounded to the nearest whole voxel, ties up, after rounding to 1e-4 (at least 1).

    Why the 1e-4: the same spacing read as float64 (a datalist) or float32 (a NIfTI header) must give the same grid;
    Python's ``round`` sends exact ties to the even neighbour, and the last bits of a float decide what is a tie."""
    return max(1, int(math.floor(round(float(size), 4) + 0.5)))


def working_shape(
    shape: Sequence[int],
    spacing: Sequence[float],
    working_spacing: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel grid of a volume at the working spacing: ``(new shape, zoom = new / old)`` per axis (x, y, z), each
    size rounded to the nearest voxel (``working_size``).

    The one rounding rule shared by training (``InputRuled``), inference (``ToWorkingGridd``) and the planner.
    Why not snapped to the detection stride (``aligned_size``, used until 0.8.5 for whole volumes too): snapping
    stretched or squeezed a volume by up to 10% per axis, and at a tie the direction followed the spacing's last
    bits; on the face-cut preset (stop-37 models, the same weights) plain rounding gave mean Det F1 0.909 against
    0.897 snapped, better on every seed for Det, Seg and CTC SEG (``bundle/docs/results.md``).
    """
    old = np.asarray(shape, dtype=np.int64)
    factor = np.asarray(as_spacing(spacing)) / np.asarray(as_spacing(working_spacing))
    new = np.asarray([working_size(o * f) for o, f in zip(old, factor)], dtype=np.int64)
    return new, new / old


def resample_volume(volume: torch.Tensor, size: Sequence[int], labels: bool = False) -> torch.Tensor:
    """Edge-aligned resampling of a ``(C, X, Y, Z)`` volume to ``size``.

    Voxel edges 0 and S map onto 0 and S', so half-open boxes scale exactly by ``S' / S``. Labels use
    nearest neighbours (``nearest-exact``); images use area averaging when every axis shrinks (no
    aliasing) and trilinear interpolation otherwise.
    """
    size = tuple(int(s) for s in size)
    if tuple(volume.shape[1:]) == size:
        return volume
    x = volume[None].float()
    if labels:
        out = F.interpolate(x, size=size, mode="nearest-exact")
        return out[0].to(volume.dtype)
    shrink = all(s <= v for s, v in zip(size, volume.shape[1:]))
    mode = "area" if shrink else "trilinear"
    out = F.interpolate(x, size=size, mode=mode, **({} if shrink else {"align_corners": False}))
    return out[0]


class ResampleToSpacingd(MapTransform):
    """Resample image and label volumes from the item's ``spacing`` to ``working_spacing``; scale boxes (no
    normalisation: training composes ``InputRuled``, which adds the model's intensity rule to the same grid).

    Why not ``Spacingd``: it keeps voxel centres (a corner-aligned grid), under which half-open voxel boxes
    do not map by a plain factor; this edge-aligned version scales boxes exactly and is undone exactly on
    output (``zoom`` is stored in the item).

    Args:
        keys: image keys (interpolated).
        label_keys: label volumes (nearest).
        box_keys: boxes scaled by the zoom.
        working_spacing: target (x, y, z) spacing in µm.
    """

    def __init__(
        self,
        keys: KeysCollection,
        working_spacing: Sequence[float],
        label_keys: KeysCollection = (),
        box_keys: KeysCollection = (),
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.working_spacing = np.asarray(as_spacing(working_spacing))
        self.label_keys = [label_keys] if isinstance(label_keys, str) else list(label_keys)
        self.box_keys = [box_keys] if isinstance(box_keys, str) else list(box_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        new, zoom = working_shape(d[self.first_key(d)].shape[1:], d["spacing"], self.working_spacing)
        for key in self.key_iterator(d):
            d[key] = resample_volume(torch.as_tensor(d[key]), new)
        return resample_annotations(d, new, zoom, self.label_keys, self.box_keys)


def resample_annotations(
    d: dict, new: Sequence[int], zoom: np.ndarray, label_keys: Sequence[str], box_keys: Sequence[str]
) -> dict:
    """An item's annotations onto the grid its image was resampled to (``new`` voxels, ``zoom`` = new / old per
    axis): label volumes by nearest neighbour, boxes and ``box_volume`` scaled exactly (edge-aligned grids);
    records ``zoom`` in the item."""
    for key in label_keys:
        if key in d:
            d[key] = resample_volume(torch.as_tensor(d[key]), new, labels=True)
    for key in box_keys:
        if key in d:
            d[key] = (np.asarray(d[key], dtype=np.float32).reshape(-1, 6) * np.tile(zoom, 2)).astype(np.float32)
    if "box_volume" in d:
        d["box_volume"] = (np.asarray(d["box_volume"]) * float(np.prod(zoom))).astype(np.float32)
    d["zoom"] = np.asarray(zoom, dtype=np.float64)
    return d


# normalised intensities are clamped to this range, in training and inference alike: a handful of saturated or
# corrupt voxels (a 3 x 3 patch of 65535 in a uint16 stack normalises to ~700) otherwise dominate the network's
# group-norm statistics over the whole volume and wipe out every detection. Nuclei stay far inside it (at most 1.73
# on every dataset of the generalisation suite); training (``InputRuled``) and inference clamp alike.
INTENSITY_CLAMP = (-1.0, 5.0)
FLOAT32_SAFE = 1e30  # raw values beyond +-this are clipped before any float32 arithmetic (resampling sums them)
# the keys of a training item (``LoadWeakAnnotationd``): the volumes a spatial transform moves together, and the
# per-box arrays that follow the boxes of ``"box"`` through crops, clips and flips
VOLUME_KEYS = ("image", "instances")
BOX_LABEL_KEYS = ("label", "mask_annotated", "instance_id", "box_volume")


class TrainingItemBoxKeys:
    """Mixin for MONAI box transforms taking ``(image_keys, box_keys, box_ref_image_keys, ...)``: a training item's
    keys as defaults, so a config names only a transform's own settings."""

    def __init__(
        self,
        image_keys: KeysCollection = VOLUME_KEYS,
        box_keys: str = "box",
        box_ref_image_keys: str = "image",
        **kwargs,
    ) -> None:
        super().__init__(image_keys, box_keys, box_ref_image_keys, **kwargs)  # type: ignore[call-arg]


def normalise(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``(x - low) / (high - low)`` clamped to ``INTENSITY_CLAMP`` (a shift only for a constant image, MONAI's
    rule)."""
    x = (x - float(low)) / float(high - low) if high > low else x - float(low)
    return x.float().clamp(*INTENSITY_CLAMP)


def scale_percentiles(x: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """MONAI's ``ScaleIntensityRangePercentiles(lower, upper, 0, 1, clip=False)`` as the training pipeline applies
    it, then the clamp to ``INTENSITY_CLAMP`` (``normalise``), with both percentiles from one ``np.percentile``
    (partition, O(n)); MONAI takes ``torch.quantile`` below 1 M voxels, which sorts (~60 ms for a SIM+ stack at
    the working spacing)."""
    low, high = np.percentile(x.numpy(), [lower, upper])
    return normalise(x, low, high)


def outlier_warning(x: torch.Tensor, low: float, high: float, upper: float, name: str) -> str | None:
    """A warning naming ``name`` when voxels of ``x`` normalise above the clamp: what was measured, what was done."""
    limit = float(low) + INTENSITY_CLAMP[1] * float(high - low)
    above = x > limit
    count = int(above.sum())
    if not count or high <= low:
        return None
    return (
        f"{name}: {count} voxel(s) lie far above the bulk of the image (up to {float(x.max()):.4g}; its "
        f"{upper:g}th percentile is {float(high):.4g}, its range {float(high - low):.4g}); clamped to "
        f"{limit:.4g} so they do not swamp the rest (saturated or corrupt voxels?)"
    )


def finite_float32(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as float32 with values beyond +-``FLOAT32_SAFE`` clipped (a float64 1e300 would become inf, a
    float32 3e38 overflows in resampling), warning with ``name`` when it clipped anything."""
    if array.dtype.kind == "f" and array.size and float(np.max(np.abs(array))) > FLOAT32_SAFE:
        count = int((np.abs(array) > FLOAT32_SAFE).sum())
        logger.warning("%s: %d voxel(s) beyond +-%g (up to %.4g): clipped before float32 arithmetic", name, count,
                       FLOAT32_SAFE, float(np.max(np.abs(array))))
        array = np.clip(array, -FLOAT32_SAFE, FLOAT32_SAFE)
    return array.astype(np.float32, copy=False)


def physical_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return 1 << 62


def check_working_size(shape: Sequence[int], spacing: Sequence[float], working: Sequence[int]) -> None:
    """Refuse, before any allocation, a volume whose spacing would resample it past this machine's memory (a
    float32 copy at the working spacing larger than physical RAM): almost always a wrong spacing or unit."""
    needed = 4 * float(np.prod(np.asarray(working, dtype=np.float64)))
    if needed > physical_memory_bytes():
        size = tuple(int(s) for s in shape)
        grid = tuple(int(s) for s in working)
        raise ValueError(
            f"spacing {tuple(float(s) for s in spacing)} µm looks wrong: it resamples the {size} volume to {grid} "
            f"voxels at the model's working spacing ({needed / 1e9:.3g} GB for one float32 copy, more than this "
            f"machine's memory). Check the file's physical size and unit, or pass the right one with "
            f'--spacing "[x, y, z]" (µm)'
        )


class RandZoomBoxVolumed(TrainingItemBoxKeys, RandZoomBoxd):
    """MONAI's ``RandZoomBoxd`` that also scales the per-box ``box_volume`` by the zoom it drew.

    Why: with ``keep_size`` a zoom-in crops the patch again, so ``MarkCutBoxesd`` must run after it and
    compare the clipped boxes with their whole volume *in zoomed voxels*. MONAI keeps the drawn factor
    in ``rand_zoom._zoom`` (already rounded to whole output voxels); ``box_volume`` is not a ``box_keys``
    entry, so MONAI leaves it alone. Keys default to a training item's (``VOLUME_KEYS``, ``"box"``).
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = super().__call__(data)
        if self._do_transform and "box_volume" in d:
            factor = float(np.prod(self.rand_zoom._zoom))
            d["box_volume"] = (np.asarray(d["box_volume"], dtype=np.float32) * factor).astype(np.float32)
        return d


class MarkCutBoxesd(MapTransform):
    """After the last crop/zoom/clip: flag (``box_ignore``) the boxes a crop cut so far that nobody would box what
    is left: thinner than ``min_extent`` voxels in some axis, or under ``min_visible`` of their volume.

    Their anchors are ignored by the loss (neither positive nor negative). Every other cut box is a positive for
    box and mask, its visible part the target: a volume's faces cut objects just as a crop does, and users annotate
    (and score) the visible part of such objects. (Ignoring crop-cut parts under half their volume, as before,
    taught the detector that slivers at a face are not objects: it found few of them.) Reads ``box_volume`` (the
    whole box's volume in the current voxels: carried through the crop as a ``label_keys`` array, scaled by
    ``InputRuled`` and ``RandZoomBoxVolumed``); boxes no crop cut are never flagged.
    """

    def __init__(self, box_key: str = "box", min_visible: float = 0.0, min_extent: float = MIN_CUT_EXTENT) -> None:
        super().__init__(keys=[box_key])
        self.box_key = box_key
        self.min_visible = min_visible
        self.min_extent = min_extent

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        boxes = np.asarray(d[self.box_key], dtype=np.float32).reshape(-1, 6)
        extent = boxes[:, 3:] - boxes[:, :3]
        volume = np.prod(extent, axis=1)
        original = np.maximum(np.asarray(d["box_volume"], dtype=np.float32).reshape(-1), 1e-6)
        cut = volume < original * (1 - 1e-4)
        too_little = (volume < self.min_visible * original) | (extent < self.min_extent).any(axis=1)
        d["box_ignore"] = (cut & too_little).astype(np.uint8)
        return d


class ShapeKeepingRandRotateBox90d(TrainingItemBoxKeys, RandRotateBox90d):
    """MONAI's ``RandRotateBox90d`` that never changes a crop's shape: on a crop that is not square in the rotated
    plane the quarter turns are skipped (the random draw still happens, so the random stream stays the same).

    Why: the crops of a batch are stacked, so one turned crop of a non-square patch breaks the batch ("stack
    expects each tensor to be equal size"); a half turn adds nothing the two flips do not already give. Keys default
    to a training item's (``VOLUME_KEYS``, ``"box"``).
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Mapping[Hashable, torch.Tensor]:
        shape = data[self.box_ref_image_keys[0]].shape[1:]
        a, b = self.spatial_axes
        if shape[a] == shape[b]:
            return super().__call__(data)
        self.randomize()
        return dict(data)


class BoundedRandCropBoxByPosNegLabeld(RandCropBoxByPosNegLabeld):
    """MONAI's ``RandCropBoxByPosNegLabeld`` with the mask of foreground crop centres painted box by box into one
    boolean volume: the same centres from the same random stream, in memory that does not grow with the box count.

    Why: MONAI's ``randomize`` builds one full-size int16 channel per box (``convert_box_to_mask``) and then takes
    their maximum, boxes x voxels x 2 bytes: 317 small nuclei in a 456 x 300 x 348 working grid asked for 28 GiB
    and training died (``scripts/geometry_sweep.py``, case005). Keys default to a training item's (``VOLUME_KEYS``,
    ``"box"``, ``BOX_LABEL_KEYS``).
    """

    def __init__(
        self,
        image_keys: KeysCollection = VOLUME_KEYS,
        box_keys: str = "box",
        label_keys: KeysCollection = BOX_LABEL_KEYS,
        **kwargs,
    ) -> None:
        super().__init__(image_keys, box_keys, label_keys, **kwargs)

    def randomize(  # type: ignore[override]
        self,
        boxes,
        image_size: Sequence[int],
        fg_indices=None,
        bg_indices=None,
        thresh_image=None,
    ) -> None:
        if fg_indices is None or bg_indices is None:
            extended = self.generate_fg_center_boxes_np(boxes, image_size)
            dims = len(image_size)
            centres = np.zeros((1, *(int(s) for s in image_size)), dtype=bool)
            for box in extended:
                centres[(0, *(slice(int(box[a]), int(box[a + dims])) for a in range(dims)))] = True
            fg_indices, bg_indices = map_binary_to_indices(centres, thresh_image, self.image_threshold)
        super().randomize(boxes, image_size, fg_indices, bg_indices, thresh_image)


def mirror_item(
    d: dict,
    before: Sequence[int],
    after: Sequence[int],
    image_keys: Sequence[Hashable],
    label_image_keys: Sequence[Hashable],
    box_key: str,
    label_keys: Sequence[Hashable],
) -> dict:
    """An item's image and label volumes (``(C, X, Y, Z)``) with ``before`` / ``after`` voxels mirrored beyond its
    faces (``mirror_faces``), and its boxes moved with them (``mirror_boxes``: an object on a face merged with its
    reflection, copies of those near a face). Each box's ``label_keys`` entries follow it and ``box_volume`` becomes
    its whole volume as ``mirror_boxes`` gives it. A copy gets an ``instance_id`` of its own, and its voxels in the
    label volumes that value (the reflection carried its original's): one instance per id, as the mask loss reads
    them."""
    d = dict(d)
    shape = d[image_keys[0]].shape[1:]
    for key in [*image_keys, *label_image_keys]:
        if key in d:
            d[key] = mirror_faces(d[key], before, after)
    n_given = len(np.asarray(d[box_key]).reshape(-1, 6))
    boxes, source, volume = mirror_boxes(d[box_key], shape, before, after, d.get("box_volume"))
    d[box_key] = boxes
    ids = np.asarray(d.get("instance_id", np.arange(1, n_given + 1)))
    for key in label_keys:
        if key in d:
            d[key] = volume if key == "box_volume" else np.asarray(d[key])[source]
    if len(boxes) > n_given:
        d["instance_id"] = renumber_copies(d, boxes, ids[source], n_given, before, shape, label_image_keys)
    return d


def renumber_copies(
    d: dict,
    boxes: np.ndarray,
    ids: np.ndarray,
    n_given: int,
    before: Sequence[int],
    shape: Sequence[int],
    label_image_keys: Sequence[Hashable],
) -> np.ndarray:
    """``(K,)`` ids with new ones for the mirrored copies (rows ``n_given:`` of ``boxes``, ``ids`` their originals'),
    written into the label volumes where a copy's box lies beyond the faces of the volume of ``shape`` (which sat at
    ``before``): a copy lies wholly there, and the volume itself keeps its original."""
    volumes = [d[key] for key in label_image_keys if key in d]
    renumbered = ids.astype(np.int64).copy()
    renumbered[n_given:] = max([int(ids.max(initial=0))] + [int(v.max()) for v in volumes]) + 1 + np.arange(
        len(boxes) - n_given
    )
    for row in range(n_given, len(boxes)):
        lo, hi = np.floor(boxes[row, :3]).astype(int), np.ceil(boxes[row, 3:]).astype(int)
        grid = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        beyond = np.zeros(grid[0].shape, dtype=bool)
        for axis, coords in enumerate(grid):
            beyond |= (coords < before[axis]) | (coords >= before[axis] + shape[axis])
        region = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))
        for volume in volumes:
            part = volume[region]
            mask = torch.as_tensor(beyond)[None] if isinstance(part, torch.Tensor) else beyond[None]
            part[(part == int(ids[row])) & mask] = int(renumbered[row])
    return renumbered


class MirrorFacesd(MapTransform):
    """A training item's faces mirrored as the predictor mirrors a volume's (``model_face_pads``, ``mirror_item``),
    so training sees faces as inference does: an object a face cuts is one blob with its reflection, and its target
    box the blob's (the predictor crops it back).

    Why: with mirroring only at inference, a face-cut object looked one way in training (a hard edge, then the
    crop's padding) and another in prediction; the model then fitted its own training volume to 0.90-0.94 Det F1
    (face-cut preset). Put it right after ``InputRuled`` (working grid), before any crop.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image_keys: KeysCollection = ("image",),
        label_image_keys: KeysCollection = ("instances",),
        box_keys: str = "box",
        label_keys: KeysCollection = BOX_LABEL_KEYS,
    ) -> None:
        self.image_keys, self.label_image_keys = list(ensure_tuple(image_keys)), list(ensure_tuple(label_image_keys))
        self.volume_keys = self.image_keys + self.label_image_keys
        super().__init__(self.volume_keys + [box_keys], allow_missing_keys=True)
        self.model, self.box_key, self.label_keys = model, box_keys, list(ensure_tuple(label_keys))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        before, after = model_face_pads(self.model, data[self.volume_keys[0]].shape[1:])
        return mirror_item(
            dict(data), before, after, self.image_keys, self.label_image_keys, self.box_key, self.label_keys
        )


class RandFaceCutd(RandomizableTransform, MapTransform):
    """Move some faces of a training crop inward, as a stack's crop would: what lies outside becomes ``fill`` in
    the images (the value the volume's padding has at inference) and 0 in the label volumes; boxes are clipped to
    what remains (MONAI's ``spatial_crop_boxes``), boxes left empty dropped with their ``label_keys`` entries.

    With probability ``prob`` per crop, each of the six faces moves, with probability 1/2, through a random box
    (see ``randomize``), by at most ``max_fraction`` of the crop's size. Put it before ``ClipBoxToImaged`` and
    ``MarkCutBoxesd``: ``box_volume`` keeps the whole box's volume, so a sliver thinner than ``min_extent`` is
    ignored and every other cut object is a positive whose visible part is the target.

    Why: real stacks are crops, and in a small training volume (a patch as large as the volume) no random crop
    ever cuts an object anew: the detector saw the same few face-cut objects at the same depth and missed the
    slivers of unseen volumes (face-cut preset, seed 1: recall 0.56 on objects cut by a face, 0.92 on whole ones).

    With ``mirror_margin`` (working voxels (x, y, z): the model's face margin in whole grid multiples,
    ``weakseg_monai.transforms.faces.mirror_margin``) a moved face is then mirrored as the predictor mirrors a
    volume's faces: up to that many voxels beyond it reflect the region kept (``mirror_item``: an object it cuts
    merges with its reflection), ``fill`` beyond that.
    """

    def __init__(
        self,
        image_keys: KeysCollection = ("image",),
        label_image_keys: KeysCollection = ("instances",),
        box_keys: str = "box",
        label_keys: KeysCollection = BOX_LABEL_KEYS,
        prob: float = 0.5,
        max_fraction: float = 0.25,
        min_visible: float = 3.0,
        fill: float = 0.0,
        mirror_margin: Sequence[int] | None = None,
    ) -> None:
        image_keys = [image_keys] if isinstance(image_keys, str) else list(image_keys)
        label_image_keys = [label_image_keys] if isinstance(label_image_keys, str) else list(label_image_keys)
        MapTransform.__init__(self, image_keys + label_image_keys + [box_keys], allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.image_keys, self.label_image_keys = image_keys, label_image_keys
        self.box_key = box_keys
        self.label_keys = [label_keys] if isinstance(label_keys, str) else list(label_keys)
        self.max_fraction = as_fraction(max_fraction, "max_fraction", 0.0, 0.5)
        self.min_visible = float(min_visible)
        self.fill = float(fill)
        self.mirror_margin = None if mirror_margin is None else [int(m) for m in mirror_margin]
        self.start: list[int] = []
        self.end: list[int] = []

    def randomize(self, shape: Sequence[int], boxes: np.ndarray | None = None) -> None:  # type: ignore[override]
        """Draw the kept region ``[start, end)``. A moved face goes through a random box thick enough along
        that axis, leaving ``min_visible``.. voxels of it (a sliver as a stack's face leaves one), at most
        ``max_fraction`` of the size in; without such a box, anywhere up to that."""
        super().randomize(None)
        self.start, self.end = [0] * len(shape), [int(s) for s in shape]
        boxes = np.zeros((0, 6)) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
        for axis, size in enumerate(shape):
            most = int(self.max_fraction * size)
            lo, hi = np.clip(boxes[:, axis], 0, size), np.clip(boxes[:, axis + 3], 0, size)
            thick = np.nonzero(hi - lo > self.min_visible)[0]
            for upper in (False, True):
                if self.R.random() >= 0.5:
                    continue
                if len(thick):
                    k = thick[self.R.randint(len(thick))]
                    visible = self.R.uniform(self.min_visible, hi[k] - lo[k])
                    cut = int(round(size - (lo[k] + visible))) if upper else int(round(hi[k] - visible))
                else:
                    cut = int(self.R.randint(0, most + 1))
                cut = int(np.clip(cut, 0, most))
                if upper:
                    self.end[axis] = int(size) - cut
                else:
                    self.start[axis] = cut

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(d[self.image_keys[0]].shape[1:], d.get(self.box_key))
        if not self._do_transform:
            return d
        return self.cut_and_mirror(d)

    def cut_and_mirror(self, d: dict) -> dict:
        """The kept region ``[start, end)`` mirrored by up to ``mirror_margin`` (none without one) beyond each moved
        face, in place in the crop (its size kept): ``fill`` / 0 beyond the mirrored voxels."""
        shape = d[self.image_keys[0]].shape[1:]
        kept = (slice(None),) + tuple(slice(a, b) for a, b in zip(self.start, self.end))
        item = dict(d)
        volume_keys = [k for k in self.image_keys + self.label_image_keys if k in d]
        for key in volume_keys:
            item[key] = d[key][kept]
        boxes, keep = spatial_crop_boxes(np.asarray(d[self.box_key], dtype=np.float32), self.start, self.end)
        item[self.box_key] = boxes.reshape(-1, 6)
        for key in self.label_keys:
            if key in d:
                item[key] = np.asarray(d[key])[np.asarray(keep, dtype=bool)]
        size = [b - a for a, b in zip(self.start, self.end)]
        margin = self.mirror_margin or [0, 0, 0]
        before = [max(0, min(m, a, k - 1)) for m, a, k in zip(margin, self.start, size)]
        after = [max(0, min(m, s - b, k - 1)) for m, s, b, k in zip(margin, shape, self.end, size)]
        if min(size) < 1:  # nothing kept: nothing to mirror
            before = after = [0, 0, 0]
        images = [k for k in self.image_keys if k in d]
        labels = [k for k in self.label_image_keys if k in d]
        item = mirror_item(item, before, after, images, labels, self.box_key, self.label_keys)
        offset = [a - p for a, p in zip(self.start, before)]
        region = (slice(None),) + tuple(slice(o, o + s) for o, s in zip(offset, item[volume_keys[0]].shape[1:]))
        for key in volume_keys:
            full = d[key].clone() if isinstance(d[key], torch.Tensor) else np.array(d[key])
            full[...] = self.fill if key in self.image_keys else 0
            full[region] = item[key]
            item[key] = full
        item[self.box_key] = item[self.box_key] + np.tile(np.asarray(offset, dtype=np.float32), 2)
        return item


class WeakWallTargetsd(MapTransform):
    """A training item's weak annotation -> ``output_key`` ``(1, X, Y, Z)`` uint8 wall-map classes (background /
    interior / wall / ``IGNORE``, ``data.wall_targets.weak_wall_classes``) for the ``boundary`` family.

    Reads ``instances`` ``(1, X, Y, Z)`` (the annotated masks), ``box`` ``(K, 6)``, ``mask_annotated`` and
    ``instance_id`` ``(K,)``, as ``LoadWeakAnnotationd`` writes them (after any resampling to the working grid)."""

    def __init__(self, keys: KeysCollection = "instances", output_key: str = "label",
                 core_fraction: float = 0.5) -> None:
        super().__init__(keys)
        self.output_key = output_key
        self.core_fraction = float(core_fraction)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            classes = weak_wall_classes(
                np.asarray(d[key])[0], np.asarray(d["box"]), np.asarray(d["mask_annotated"]),
                np.asarray(d["instance_id"]), self.core_fraction,
            )
            d[self.output_key] = torch.from_numpy(classes[None])
        return d


class InstancesToSemanticd(MapTransform):
    """Instance volume ``(1, X, Y, Z)`` -> 3-class target (background / interior / boundary) for the baseline."""

    def __init__(self, keys: KeysCollection = "instances", output_key: str = "label") -> None:
        super().__init__(keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from weakseg_monai.networks.baseline import instances_to_semantic

        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = torch.from_numpy(instances_to_semantic(np.asarray(d[key])[0])[None])
        return d
