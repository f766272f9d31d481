"""Mirroring the volume's faces before prediction, so an object a face cuts is seen whole.

A nucleus cut by a face of the volume is a sliver with a hard edge; mirrored across that face it becomes a
symmetric blob the size of a nucleus, which the model finds as it finds any whole one. Its box and mask are then
cropped back to the volume. Objects near a face but not on it mirror into copies wholly outside the volume, which
the crop removes, and only objects centred in the volume go to NMS, so such a copy cannot suppress its original.
What it gains, measured inference-only on the suite's models with the same weights with and without it: see
``weakseg_monai.networks.family.FACE_MIRROR_FRACTION`` and ``bundle/docs/results.md``.

Training sees the same view (``weakseg_monai.transforms.MirrorFacesd`` on the training volume's faces,
``RandFaceCutd(mirror_margin=...)`` on the faces it cuts into a crop): ``mirror_boxes`` moves the boxes with the
image, an object on a face merging with its reflection into one target, one near a face gaining a copy.

Why not MONAI's padding: ``SpatialPad`` / ``pad_images`` pad at the end with constants (what the size divisor
needs); this pads every face, by reflection, and records how much so results can be moved back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weakseg_monai.networks.family import unwrap

MIN_CUT_EXTENT = 3  # voxels: what a face or a crop leaves of an object thinner than this is nobody's box


def whole_multiples(margin: Sequence[float], multiple: Sequence[int]) -> list[int]:
    """Each of ``margin`` rounded up to a whole number of ``multiple`` (0 stays 0)."""
    return [int(np.ceil(float(m) / int(s) - 1e-6)) * int(s) if m > 0 else 0 for m, s in zip(margin, multiple)]


def mirror_margin(model: nn.Module) -> list[int]:
    """Working voxels (x, y, z) a model's predictor mirrors beyond a volume's faces: its family's ``face_margin`` in
    whole grid multiples (before ``face_pads`` limits it by the volume's size)."""
    model = unwrap(model)
    return whole_multiples(model.face_margin(), model.grid_multiple())


def model_face_pads(model: nn.Module, shape: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(before, after)`` voxels a model's predictor mirrors beyond the faces of a working volume of ``shape``:
    ``face_pads`` of its family's ``face_margin`` on its grid multiple. The predictor and training's ``MirrorFacesd``
    both call this, so they cannot differ."""
    model = unwrap(model)
    return face_pads(model.face_margin(), shape, multiple=model.grid_multiple())


def face_pads(
    margin: Sequence[float],
    shape: Sequence[int],
    touches: Sequence[tuple[bool, bool]] | None = None,
    multiple: Sequence[int] = (1, 1, 1),
) -> tuple[list[int], list[int]]:
    """``(before, after)`` voxels to mirror per axis (x, y, z): ``margin`` rounded up to a whole number of
    ``multiple`` (the model's grid multiple: the content keeps its place on the anchor grid, which a shift by a part
    of a stride costs ~0.02 mask IoU), less than the size (reflection needs it; the multiple is then dropped), and
    only on the sides in ``touches`` (default: all) -- a block's sides inside the volume are not faces."""
    before, after = [], []
    for a, (pad, size, step) in enumerate(zip(whole_multiples(margin, multiple), shape, multiple)):
        if pad >= size:
            pad = (int(size) - 1) // int(step) * int(step) or int(size) - 1
        pad = max(0, pad)
        lo, hi = touches[a] if touches is not None else (True, True)
        before.append(pad if lo else 0)
        after.append(pad if hi else 0)
    return before, after


def mirror_faces(volume: torch.Tensor | np.ndarray, before: Sequence[int], after: Sequence[int]):
    """A ``(C, X, Y, Z)`` tensor or an ``(X, Y, Z)`` array with ``before`` / ``after`` voxels mirrored beyond its
    faces (reflection about the edge voxel, as ``numpy.pad(mode="reflect")``)."""
    if not any(before) and not any(after):
        return volume
    if isinstance(volume, np.ndarray):
        return np.pad(volume, list(zip(before, after)), mode="reflect")
    if volume.device.type == "cpu":  # torch's CPU reflection pad costs ~8 ms even on a training crop; numpy's 0.1 ms
        lead = [(0, 0)] * (volume.ndim - len(before))
        return torch.from_numpy(np.pad(volume.detach().numpy(), lead + list(zip(before, after)), mode="reflect"))
    pad = [p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]
    return F.pad(volume[None], pad, mode="reflect")[0]


def mirror_boxes(
    boxes: np.ndarray,
    shape: Sequence[int],
    before: Sequence[int],
    after: Sequence[int],
    volume: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes of a volume of ``shape`` after ``mirror_faces(volume, before, after)``, in the mirrored volume's
    voxels: ``(boxes (K, 6) float32, source (K,) index of the input box each came from, volume (K,) float32)``.

    The reflection is about the centre of the edge voxel (``x -> 1 - x`` below, ``x -> 2 S - 1 - x`` above, as
    ``numpy.pad(mode="reflect")``). A box reaching past that centre merges with its reflection into one box (the
    object and its mirror image are one blob in the image); a box whose reflection reaches into the margin gains a
    copy there. Axis after axis, so an object near a corner gets its diagonal copies. Boxes are clipped to the
    mirrored volume and copies left empty dropped: the first ``G`` rows are the input boxes (never empty), the
    copies follow. ``volume``: each box's whole volume (``box_volume``, what
    ``MarkCutBoxesd`` compares with; default: the boxes' own) for boxes left as they were, the unclipped volume for
    merged boxes and copies (a copy the margin cuts to a sliver is then one a crop cut).
    """
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 6).copy()
    source = np.arange(len(out))
    changed = np.zeros(len(out), dtype=bool)
    for axis, size in enumerate(shape):
        for upper, pad in ((False, int(before[axis])), (True, int(after[axis]))):
            if pad <= 0:
                continue
            centre = float(size) - 0.5 if upper else 0.5
            lo, hi = out[:, axis].copy(), out[:, axis + 3].copy()
            mirrored_lo, mirrored_hi = 2 * centre - hi, 2 * centre - lo
            touching = hi > centre if upper else lo < centre
            out[touching, axis] = np.minimum(lo, mirrored_lo)[touching]
            out[touching, axis + 3] = np.maximum(hi, mirrored_hi)[touching]
            changed |= touching
            reaches = ~touching & ((mirrored_lo < size + pad) if upper else (mirrored_hi > -pad))
            copies = out[reaches].copy()
            copies[:, axis], copies[:, axis + 3] = mirrored_lo[reaches], mirrored_hi[reaches]
            out = np.concatenate([out, copies])
            source = np.concatenate([source, source[reaches]])
            changed = np.concatenate([changed, np.ones(int(reaches.sum()), dtype=bool)])
    shift = np.tile(np.asarray(before, dtype=np.float64), 2)
    limit = np.tile(np.asarray(shape, dtype=np.float64) + np.asarray(before) + np.asarray(after), 2)
    whole = np.prod(out[:, 3:] - out[:, :3], axis=1)
    if volume is not None:
        whole[~changed] = np.asarray(volume, dtype=np.float64).reshape(-1)[source[~changed]]
    out = np.clip(out + shift, 0, limit)
    kept = (out[:, 3:] > out[:, :3]).all(axis=1)
    return out[kept].astype(np.float32), source[kept], whole[kept].astype(np.float32)


def face_slivers(
    boxes: np.ndarray, shape: Sequence[int], axes: Sequence[bool] = (True, True, True), min_extent: int = MIN_CUT_EXTENT
) -> np.ndarray:
    """``(K,)`` bool: the half-open boxes ``(K, 6)`` of a volume of ``shape`` that lie on a face of it and are thinner
    than ``min_extent`` voxels across that face, for the ``axes`` (x, y, z) flagged.

    What a face leaves of such an object is a sliver nobody would box: training ignores the same slivers when a crop
    cuts them (``MarkCutBoxesd(min_extent=3)``), so the model is never taught them either way, and the predictor does
    not report them. The predictor flags only the axes along which its model's typical object spans more than
    ``min_extent`` voxels, where such a sliver is a piece, not a whole object. An axis the volume itself is thinner
    than ``min_extent`` along is never a cut."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    size = np.asarray(shape, dtype=np.float64)
    on_face = (b[:, :3] <= 0) | (b[:, 3:] >= size)
    thin = (b[:, 3:] - b[:, :3]) < np.minimum(float(min_extent), size)
    return (on_face & thin & np.asarray(axes, dtype=bool)).any(axis=1)


__all__ = [
    "MIN_CUT_EXTENT",
    "face_pads",
    "face_slivers",
    "mirror_boxes",
    "mirror_faces",
    "mirror_margin",
    "model_face_pads",
    "whole_multiples",
]
