"""Mirroring the volume's faces before prediction, so an object a face cuts is seen whole.

A nucleus cut by a face of the volume is a sliver with a hard edge; mirrored across that face it becomes a
symmetric blob the size of a nucleus, which the model finds as it finds any whole one. Its box and mask are then
cropped back to the volume. Objects near a face but not on it mirror into copies wholly outside the volume, which
the crop removes, and only objects centred in the volume go to NMS, so such a copy cannot suppress its original.
What it gains, measured inference-only on the suite's models with the same weights with and without it: see
``weakseg_monai.networks.family.FACE_MIRROR_FRACTION`` and ``bundle/docs/results.md``.

Why not MONAI's padding: ``SpatialPad`` / ``pad_images`` pad at the end with constants (what the size divisor
needs); this pads every face, by reflection, and records how much so results can be moved back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def whole_multiples(margin: Sequence[float], multiple: Sequence[int]) -> list[int]:
    """Each of ``margin`` rounded up to a whole number of ``multiple`` (0 stays 0)."""
    return [int(np.ceil(float(m) / int(s) - 1e-6)) * int(s) if m > 0 else 0 for m, s in zip(margin, multiple)]


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
    pad = [p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]
    return F.pad(volume[None], pad, mode="reflect")[0]


__all__ = ["face_pads", "mirror_faces", "whole_multiples"]
