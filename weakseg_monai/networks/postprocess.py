"""Post-processing: detections from anchor outputs (threshold, top-k, 3D NMS) and mask paste-back.

NMS, box decoding and clipping are MONAI's (``batched_nms``, ``BoxCoder``, ``clip_boxes_to_image``);
pasting RoI masks back into a label volume with "higher score wins" is written here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.data.box_utils import batched_nms, clip_boxes_to_image
from torch import Tensor, nn

from weakseg_monai.data.instances import boxes_from_instances

logger = logging.getLogger(__name__)


def centres_in(boxes: Tensor, region: tuple[Sequence[float], Sequence[float]] | None) -> Tensor:
    """``(K,)`` bool: the ``(K, 6)`` boxes whose centre lies in ``region = (lo, hi)`` (all, for ``None``)."""
    if region is None:
        return torch.ones(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    lo, hi = (torch.as_tensor([float(v) for v in r], dtype=boxes.dtype, device=boxes.device) for r in region)
    centre = (boxes[:, :3] + boxes[:, 3:]) / 2
    return ((centre >= lo) & (centre < hi)).all(dim=1)


def select_detections(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    box_coder: BoxCoder,
    spatial_size: Sequence[int],
    score_thresh: float = 0.5,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.3,
    detections_per_image: int = 300,
    min_size: float = 1.0,
    region: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes, scores and class indices (>= 1) of one image, sorted by decreasing score.

    Args:
        cls_logits: ``(A, c)``; box_deltas: ``(A, 6)``; anchors: ``(A, 6)``.
        region: ``(lo, hi)``: only boxes centred in ``[lo, hi)`` go to NMS (the rest of the grid is a mirrored
            face or a halo: a twin there must not suppress the object).
    """
    num_classes = cls_logits.shape[1]
    probs = torch.softmax(cls_logits.float(), dim=1)[:, 1:].reshape(-1)
    candidates = torch.nonzero(probs > score_thresh).squeeze(1)
    if candidates.numel() > topk_candidates:
        logger.warning(
            "%d candidates above score %.2f, only the top %d go to NMS (topk_candidates): objects may be lost",
            candidates.numel(), score_thresh, topk_candidates,
        )
        candidates = candidates[torch.topk(probs[candidates], topk_candidates).indices]
    scores = probs[candidates]
    anchor_idx = torch.div(candidates, num_classes - 1, rounding_mode="floor")
    classes = candidates % (num_classes - 1) + 1
    boxes = box_coder.decode_single(box_deltas[anchor_idx].float(), anchors[anchor_idx].float())
    boxes, _ = clip_boxes_to_image(boxes, spatial_size, remove_empty=False)
    big = ((boxes[:, 3:] - boxes[:, :3]) >= min_size).all(dim=1)
    if region is not None:
        big &= centres_in(boxes, region)
    boxes, scores, classes = boxes[big], scores[big], classes[big]
    keep = batched_nms(boxes, scores, classes, nms_thresh, max_proposals=-1)
    if keep.numel() > detections_per_image:
        logger.warning(
            "%d detections after NMS, keeping the %d best (detections_per_image): objects are lost",
            keep.numel(), detections_per_image,
        )
        keep = keep[:detections_per_image]
    return boxes[keep], scores[keep], classes[keep]


LIMIT_REFERENCE_VOXELS = 128 * 128 * 32  # top-k and detection limits are per this many working voxels


class BoxSelector(nn.Module):
    """The detector's box selector: ``select_detections`` (score threshold, top-k, 3D NMS) with limits that scale
    with the volume; the one place the score threshold is written (``set_score_threshold``, as MONAI's
    ``RetinaNetDetector.set_box_selector_parameters``).

    Args:
        score_thresh: scores above it are kept (calibrated on validation); nms_thresh: box IoU above which the
            lower-scored box is dropped (planned). Both are buffers, so ``model.pt`` carries them.
        topk_candidates, detections_per_image: per ``LIMIT_REFERENCE_VOXELS`` (a 128 x 128 x 32 tile) of working
            voxels, scaled up with the volume, so a stitched light-sheet stack of thousands of nuclei is not capped
            at a tile's count (a warning says when they cut).
        min_size: boxes narrower than this (voxels) on some axis are dropped.
    """

    def __init__(
        self,
        score_thresh: float = 0.5,
        nms_thresh: float = 0.3,
        topk_candidates: int = 1000,
        detections_per_image: int = 300,
        min_size: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_buffer("score_thresh", torch.tensor(float(score_thresh)))
        self.register_buffer("nms_thresh", torch.tensor(float(nms_thresh)))
        self.topk_candidates = topk_candidates
        self.detections_per_image = detections_per_image
        self.min_size = min_size

    def set_score_threshold(self, value: float) -> None:
        self.score_thresh.fill_(float(value))

    @contextmanager
    def lowered(self, floor: float) -> Iterator[None]:
        """Score threshold at ``floor`` and 4x the top-k candidates (a low floor lets more through to NMS)."""
        saved, saved_topk = self.score_thresh.clone(), self.topk_candidates
        self.score_thresh.fill_(float(floor))
        self.topk_candidates = saved_topk * 4
        try:
            yield
        finally:
            self.score_thresh.copy_(saved)
            self.topk_candidates = saved_topk

    def limits(self, spatial: Sequence[int]) -> tuple[int, int]:
        """``(topk_candidates, detections_per_image)`` for a volume of ``spatial`` working voxels."""
        scale = max(1.0, float(np.prod([int(s) for s in spatial])) / LIMIT_REFERENCE_VOXELS)
        return int(np.ceil(self.topk_candidates * scale)), int(np.ceil(self.detections_per_image * scale))

    def forward(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        anchors: Tensor,
        box_coder: BoxCoder,
        spatial: Sequence[int],
        region: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One image's ``cls_logits (A, c)`` and ``box_deltas (A, 6)`` -> boxes, scores, class indices (>= 1),
        centred in ``region`` (``select_detections``)."""
        topk, max_detections = self.limits(spatial)
        return select_detections(
            cls_logits, box_deltas, anchors, box_coder, spatial, float(self.score_thresh), topk,
            float(self.nms_thresh), max_detections, self.min_size, region,
        )


def paste_masks_in_volume(
    mask_probs: Tensor, boxes: Tensor, scores: Tensor, spatial_size: Sequence[int], threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Paste per-RoI mask probabilities into one instance label volume.

    Each ``M³`` mask is resampled trilinearly to the voxels its box covers and thresholded; where
    instances overlap the higher score wins.

    Args:
        mask_probs: ``(K, M, M, M)`` in [0, 1], or a list of K grids of any size each; boxes: ``(K, 6)``;
            scores: ``(K,)``.
    Returns:
        ``labels (X, Y, Z)`` int32, value ``k + 1`` = the ``k``-th of the kept instances in input order,
        and ``keep (K,)`` bool: instances left with at least one voxel.
    """
    owner = torch.zeros(tuple(int(s) for s in spatial_size), dtype=torch.int32, device=boxes.device)
    paste_masks(owner, mask_probs, boxes, scores, threshold)
    return compact_labels(owner, boxes.shape[0])


def paste_masks(
    owner: Tensor,
    mask_probs: Tensor | Sequence[Tensor],
    boxes: Tensor,
    scores: Tensor,
    threshold: float = 0.5,
    values: Sequence[int] | None = None,
) -> Tensor:
    """``paste_masks_in_volume`` into an existing ``owner (X, Y, Z)`` int32 volume (in place), writing ``values[k]``
    (default ``k + 1``) for box ``k``; boxes in ``owner``'s voxels, parts outside it are clipped (a block of a
    larger volume pastes the part of each mask it holds)."""
    device = owner.device
    size = torch.tensor(list(owner.shape), device=device)
    order = torch.argsort(scores, descending=False)  # low first: higher scores overwrite
    for k in order.tolist():
        box = boxes[k].float().to(device)
        lo = torch.floor(box[:3]).long().clamp(min=0)
        hi = torch.minimum(torch.ceil(box[3:]).long(), size)
        if (hi <= lo).any():
            continue
        axes = []
        for a in range(3):
            centres = torch.arange(int(lo[a]), int(hi[a]), device=device, dtype=torch.float32) + 0.5
            axes.append(2.0 * (centres - box[a]) / (box[a + 3] - box[a]).clamp(min=1e-6) - 1.0)
        gx, gy, gz = torch.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
        grid = torch.stack([gz, gy, gx], dim=-1)[None]  # grid_sample wants (W, H, D) = (z, y, x) order
        sampled = F.grid_sample(
            mask_probs[k][None, None].float().to(device), grid, mode="bilinear", padding_mode="border",
            align_corners=False,
        )[0, 0]
        region = owner[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        region[sampled > threshold] = k + 1 if values is None else int(values[k])
    return owner


def compact_labels(labels: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Labels ``1..n`` with no voxel left are dropped and the rest renumbered consecutively.

    Returns the volume (the input itself when every label is present: no copy) and ``keep (n,)`` bool.
    """
    keep = torch.bincount(labels.flatten(), minlength=n + 1)[1:] > 0
    if bool(keep.all()):
        return labels, keep
    relabel = torch.zeros(n + 1, dtype=labels.dtype, device=labels.device)
    relabel[1:][keep] = torch.arange(1, int(keep.sum()) + 1, dtype=labels.dtype, device=labels.device)
    return relabel[labels.long()], keep


def objects_from_labels(labels: np.ndarray | Tensor) -> dict[str, Tensor]:
    """``find_objects`` of a family whose second stage labels a volume (e.g. connected components): ``boxes (n, 6)``
    of labels ``1..n`` of the ``(X, Y, Z)`` volume, score 1 and class 1 each, and the volume itself under
    ``"labels"`` for ``label_masks``."""
    volume = torch.as_tensor(np.asarray(labels, dtype=np.int32))
    boxes = torch.from_numpy(boxes_from_instances(volume.numpy())).float()
    n = boxes.shape[0]
    return {"boxes": boxes, "scores": torch.ones(n), "classes": torch.ones(n, dtype=torch.long), "labels": volume}


def label_masks(found: dict[str, Tensor], keep: Tensor) -> tuple[Tensor, list[Tensor]]:
    """``object_masks`` for ``objects_from_labels``: each kept object's box as its frame and its exact voxels in the
    box as a 0/1 grid of the box's size (pasting it back at threshold 0.5 gives the same voxels)."""
    frames = found["boxes"][keep]
    masks = []
    for k in torch.nonzero(keep).squeeze(1).tolist():
        x0, y0, z0, x1, y1, z1 = (int(v) for v in found["boxes"][k].tolist())
        masks.append((found["labels"][x0:x1, y0:y1, z0:z1] == k + 1).float())
    return frames, masks
