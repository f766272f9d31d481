"""What to annotate next: how unsure a trained model is of each annotated box's mask, through the predictor alone.

The model runs on the volume and on its flips along each axis (test-time augmentation); each run's instance that
best matches a box (3D box IoU) gives that run's mask inside the box. Where the runs agree the model knows the
object's shape; where they disagree, or where some runs find no object there at all, a voxel mask from the user
teaches it most. The score of a box is the mean, over its voxels, of the binary entropy (in bits) of the runs'
vote; a box no run finds scores 1, the most.

Why flips and not the mask head's own probabilities: only ``Predictor.__call__`` is the family contract
(``weakseg_monai.families``); the probabilities are a family's internals, and flips work for every family. Why
written here: MONAI's ``TestTimeAugmentation`` inverts dense outputs of one network call; ours are instance label
volumes whose ids differ between runs, so runs are matched box by box first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data.box_utils import box_iou

FLIPS: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (2,))  # the identity and one flip per axis (x, y, z)
MATCH_IOU = 0.3  # a run's instance is a box's when their boxes overlap at least this much (3D IoU)


def flip_boxes(boxes: np.ndarray, axes: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """``(K, 6)`` half-open boxes of a volume of ``shape`` mirrored along ``axes`` (its own inverse)."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 6).copy()
    for a in axes:
        out[:, a], out[:, a + 3] = shape[a] - out[:, a + 3], shape[a] - out[:, a]
    return out


def flipped_predictions(
    predict: Callable[[torch.Tensor, Sequence[float]], dict],
    image: torch.Tensor,
    spacing: Sequence[float],
    flips: Sequence[Sequence[int]] = FLIPS,
) -> list[dict[str, np.ndarray]]:
    """One prediction per flip of a ``(1, X, Y, Z)`` image, each mapped back to the image's own frame:
    ``boxes (K, 6)`` and ``instances (X, Y, Z)`` as ``predict`` (a ``WeakSegPredictor``) returns them."""
    shape = tuple(int(s) for s in image.shape[1:])
    runs = []
    for axes in flips:
        dims = [a + 1 for a in axes]
        found = predict(torch.flip(image, dims) if dims else image, spacing)
        instances = np.asarray(found["instances"])
        runs.append(
            {
                "boxes": flip_boxes(found["boxes"], axes, shape),
                "instances": np.flip(instances, tuple(axes)) if axes else instances,
            }
        )
    return runs


def box_slices(box: np.ndarray, shape: Sequence[int]) -> tuple[slice, ...]:
    """The voxels of a half-open box, clipped to the volume."""
    lo = np.clip(np.floor(box[:3]).astype(int), 0, shape)
    hi = np.clip(np.ceil(box[3:]).astype(int), lo, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def mask_disagreement(runs: Sequence[dict[str, np.ndarray]], boxes: np.ndarray) -> np.ndarray:
    """``(G,)`` in [0, 1] for boxes ``(G, 6)``: the mean binary entropy (bits) over each box's voxels of the share
    of ``runs`` (``flipped_predictions``) whose matching instance holds the voxel; 1 for a box no run finds."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    if not len(boxes):
        return np.zeros(0)
    shape = runs[0]["instances"].shape
    votes = [np.zeros(tuple(s.stop - s.start for s in box_slices(b, shape))) for b in boxes]
    found = np.zeros(len(boxes), dtype=int)
    for run in runs:
        predicted = np.asarray(run["boxes"], dtype=np.float32).reshape(-1, 6)
        if not len(predicted):
            continue
        iou = box_iou(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(predicted)).numpy()
        best = iou.argmax(axis=1)
        for g in np.nonzero(iou[np.arange(len(boxes)), best] >= MATCH_IOU)[0]:
            votes[g] += run["instances"][box_slices(boxes[g], shape)] == best[g] + 1
            found[g] += 1
    scores = np.ones(len(boxes))
    for g in np.nonzero(found)[0]:
        p = np.clip(votes[g] / len(runs), 1e-6, 1 - 1e-6)
        scores[g] = float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))) if p.size else 1.0
    return scores


def annotation_order(scores: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """Indices of the boxes without a mask (``annotated`` False), most uncertain first (ties: lower index)."""
    candidates = np.nonzero(~np.asarray(annotated, dtype=bool))[0]
    return candidates[np.argsort(-np.asarray(scores)[candidates], kind="stable")]


def rank_boxes(
    predict: Callable[[torch.Tensor, Sequence[float]], dict],
    image: torch.Tensor,
    spacing: Sequence[float],
    boxes: np.ndarray,
    annotated: np.ndarray,
    flips: Sequence[Sequence[int]] = FLIPS,
) -> tuple[np.ndarray, np.ndarray]:
    """``(order, scores)``: the boxes without a mask of a ``(1, X, Y, Z)`` image, most worth a voxel mask first,
    and every box's ``mask_disagreement``."""
    scores = mask_disagreement(flipped_predictions(predict, image, spacing, flips), boxes)
    return annotation_order(scores, annotated), scores


__all__ = ["FLIPS", "annotation_order", "flip_boxes", "flipped_predictions", "mask_disagreement", "rank_boxes"]
