"""Cell Tracking Challenge measures and the StarDist-style matching curve, vectorised.

- ``ctc_seg``: SEG -- mean Jaccard over the reference objects; a reference is matched by the result
  object covering more than half of it, an unmatched reference counts 0.
- ``ctc_det``: DET -- 1 - min(AOGM-D, AOGM-D0) / AOGM-D0 with AOGM-D = 5 · splits + 10 · FN + 1 · FP
  (a result object covering > 50% of several references needs ``n - 1`` splits) and AOGM-D0 = 10 · #references.
- ``matching_curve``: accuracy TP / (TP + FP + FN), precision, recall, F1 and mean matched IoU at IoU
  thresholds 0.1 ... 0.9 (one-to-one matching).
- ``marker_f1``: predicted box centres within ``max_distance`` voxels of ground-truth markers, one-to-one
  (the paper's C. elegans measure).

All from one joint histogram of the two label volumes (``instance_iou``), no per-voxel Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from weakseg_monai.metrics.instance import detection_scores, joint_histogram, match_one_to_one


def _overlaps(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint voxel counts ``(G, P)`` of reference x result objects, and their sizes."""
    joint, _, _, gt_size, pred_size = joint_histogram(gt_labels, pred_labels)
    return joint, gt_size, pred_size


def _majority_cover(joint: np.ndarray, gt_size: np.ndarray) -> np.ndarray:
    """``(G, P)`` bool: result p covers more than half of reference g (at most one p per g)."""
    return 2 * joint > gt_size[:, None]


def ctc_seg(gt_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """CTC SEG of one volume (mean Jaccard over references; 1.0 when there is no reference)."""
    joint, gt_size, pred_size = _overlaps(gt_labels, pred_labels)
    if len(gt_size) == 0:
        return 1.0
    cover = _majority_cover(joint, gt_size)
    union = gt_size[:, None] + pred_size[None, :] - joint
    jaccard = np.where(cover, joint / np.maximum(union, 1), 0.0)
    return float(jaccard.max(axis=1, initial=0.0).mean())


def ctc_det(gt_labels: np.ndarray, pred_labels: np.ndarray) -> dict[str, float]:
    """CTC DET of one volume with its AOGM-D parts (splits, FN, FP)."""
    joint, gt_size, _ = _overlaps(gt_labels, pred_labels)
    n_ref = len(gt_size)
    cover = _majority_cover(joint, gt_size)
    refs_per_result = cover.sum(axis=0)
    splits = int(np.maximum(refs_per_result - 1, 0).sum())
    fn = int((cover.sum(axis=1) == 0).sum())
    fp = int((refs_per_result == 0).sum())
    aogm = 5 * splits + 10 * fn + 1 * fp
    aogm0 = 10 * n_ref
    det = 1.0 - min(aogm, aogm0) / aogm0 if aogm0 else float(aogm == 0)
    return {"det": det, "aogm_d": aogm, "splits": splits, "fn": fn, "fp": fp}


def matching_curve(
    gt_labels: np.ndarray,
    pred_labels: np.ndarray,
    thresholds: Sequence[float] = tuple(np.round(np.arange(0.1, 1.0, 0.1), 1)),
) -> list[dict[str, float]]:
    """StarDist-style scores at each IoU threshold (one-to-one matching maximising IoU)."""
    joint, gt_size, pred_size = _overlaps(gt_labels, pred_labels)
    union = gt_size[:, None] + pred_size[None, :] - joint
    iou = np.divide(joint, union, out=np.zeros(joint.shape), where=union > 0)
    rows = []
    for t in thresholds:
        r, c = match_one_to_one(iou, float(t))
        tp = len(r)
        fp, fn = len(pred_size) - tp, len(gt_size) - tp
        row = {
            "threshold": float(t),
            "accuracy": tp / max(tp + fp + fn, 1),
            **detection_scores(tp, len(gt_size), len(pred_size)),
        }
        row["mean_matched_iou"] = float(iou[r, c].mean()) if tp else 0.0
        rows.append(row)
    return rows


def marker_f1(markers: np.ndarray, pred_boxes: np.ndarray, max_distance: float = 5.0) -> dict[str, float]:
    """F1 of predicted box centres against ``(M, 3)`` markers within ``max_distance`` voxels, one-to-one."""
    markers = np.asarray(markers, dtype=np.float64).reshape(-1, 3)
    boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 6)
    centres = (boxes[:, :3] + boxes[:, 3:]) / 2
    tp = 0
    if len(markers) and len(centres):
        dist = np.linalg.norm(markers[:, None, :] - centres[None, :, :], axis=-1)
        r, c = linear_sum_assignment(np.where(dist <= max_distance, dist, 1e9))
        tp = int((dist[r, c] <= max_distance).sum())
    return detection_scores(tp, len(markers), len(centres))
