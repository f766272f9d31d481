"""Detection and segmentation F1 with one-to-one matching, plus Ignite metrics for the bundle.

- ``detection_f1``: a predicted box is a true positive when its 3D IoU with its matched ground-truth box
  exceeds the threshold (0.4, the paper's definition); matching is one-to-one (Hungarian on IoU).
- ``segmentation_f1``: instances of two label volumes matched one-to-one by mask IoU (> 0.5 by default);
  the IoU matrix comes from one joint histogram of the overlapping voxels (no per-voxel Python loop).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ignite.metrics import Metric
from monai.data.box_utils import box_iou
from scipy.optimize import linear_sum_assignment

from weakseg_monai.utils.boxes import touches_face


def match_one_to_one(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (gt, pred) maximising total IoU among pairs with IoU > ``threshold``; ``iou`` is ``(G, P)``.

    Rows and columns without a single IoU above the threshold cannot be matched and are left out of the
    assignment (same pairs; an untrained model's thousands of stray boxes cost nothing)."""
    above = iou > threshold
    rows_in, cols_in = np.nonzero(above.any(axis=1))[0], np.nonzero(above.any(axis=0))[0]
    if rows_in.size == 0 or cols_in.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    sub = iou[np.ix_(rows_in, cols_in)]
    rows, cols = linear_sum_assignment(-np.where(sub > threshold, sub, 0.0))
    ok = sub[rows, cols] > threshold
    return rows_in[rows[ok]], cols_in[cols[ok]]


def detection_scores(tp: int, n_gt: int, n_pred: int) -> dict[str, float]:
    """F1, precision, recall and the counts of ``tp`` matches among ``n_gt`` true and ``n_pred`` found objects (an
    empty side scores 1 when the other is empty too)."""
    fp, fn = n_pred - tp, n_gt - tp
    precision = tp / n_pred if n_pred else (1.0 if n_gt == 0 else 0.0)
    recall = tp / n_gt if n_gt else 1.0
    f1 = 2 * tp / (n_gt + n_pred) if (n_gt + n_pred) else 1.0
    return {"f1": f1, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def _matched_boxes(gt_boxes, pred_boxes, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """``(G, 6)`` ground-truth boxes, the indices of those matched one-to-one at 3D IoU > ``iou_threshold``, and
    the number of predicted boxes."""
    gt = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 6)
    pred = np.asarray(pred_boxes, dtype=np.float32).reshape(-1, 6)
    iou = box_iou(torch.as_tensor(gt), torch.as_tensor(pred)).numpy() if len(gt) and len(pred) else np.zeros(
        (len(gt), len(pred))
    )
    rows, _ = match_one_to_one(iou, iou_threshold)
    return gt, rows, len(pred)


def detection_f1(gt_boxes, pred_boxes, iou_threshold: float = 0.4) -> dict[str, float]:
    """Detection F1 of ``(G, 6)`` vs ``(P, 6)`` StandardMode boxes at 3D IoU > ``iou_threshold``."""
    gt, rows, n_pred = _matched_boxes(gt_boxes, pred_boxes, iou_threshold)
    return detection_scores(len(rows), len(gt), n_pred)


def detection_recall_by_face(gt_boxes, pred_boxes, spatial_shape, iou_threshold: float = 0.4) -> dict[str, int]:
    """Detection hits split by where the ground-truth object lies: ``tp_face_cut`` of ``n_face_cut`` objects with a
    voxel on a face of the volume (``weakseg_monai.utils.boxes.touches_face``), ``tp_whole`` of ``n_whole`` others
    (the one-to-one matching of ``detection_f1``)."""
    gt, rows, _ = _matched_boxes(gt_boxes, pred_boxes, iou_threshold)
    cut = touches_face(gt, spatial_shape)
    hit = np.zeros(len(gt), dtype=bool)
    hit[rows] = True
    return {
        "tp_face_cut": int((hit & cut).sum()),
        "n_face_cut": int(cut.sum()),
        "tp_whole": int((hit & ~cut).sum()),
        "n_whole": int((~cut).sum()),
    }


def _dense_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label values (0 first) and the labels renumbered 0..n-1 in that order."""
    values, dense = np.unique(labels, return_inverse=True)
    if values[0] != 0:
        values, dense = np.concatenate([[0], values]), dense + 1
    return values, dense


def joint_histogram(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Voxel counts of every (reference, result) pair of two label volumes, in one pass.

    Returns ``joint (G, P)``, the label values ``gt_ids (G,)``, ``pred_ids (P,)`` (0 excluded) and the
    object sizes ``gt_size (G,)``, ``pred_size (P,)``. Small non-negative integer labels go straight into
    one ``bincount`` (no sort); other labels are renumbered with ``np.unique`` first.
    """
    gt = np.asarray(gt_labels).ravel()
    pred = np.asarray(pred_labels).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"label volumes differ in size: {np.shape(gt_labels)} vs {np.shape(pred_labels)}")
    gt_values = pred_values = None
    for name, arr in (("gt", gt), ("pred", pred)):
        small = arr.dtype.kind in "iub" and arr.size and arr.min() >= 0 and arr.max() < 1_000_000
        if not small:
            values, dense = _dense_labels(arr)
            if name == "gt":
                gt_values, gt = values, dense
            else:
                pred_values, pred = values, dense
    g_n, p_n = int(gt.max(initial=0)) + 1, int(pred.max(initial=0)) + 1
    counts = np.bincount(gt.astype(np.int64) * p_n + pred, minlength=g_n * p_n).reshape(g_n, p_n)
    gt_idx = np.nonzero(counts[1:].any(axis=1))[0] + 1
    pred_idx = np.nonzero(counts[:, 1:].any(axis=0))[0] + 1
    joint = counts[np.ix_(gt_idx, pred_idx)]
    gt_ids = gt_idx if gt_values is None else gt_values[gt_idx]
    pred_ids = pred_idx if pred_values is None else pred_values[pred_idx]
    return joint, gt_ids, pred_ids, counts[gt_idx].sum(axis=1), counts[:, pred_idx].sum(axis=0)


def instance_iou(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU matrix ``(G, P)`` between the instances of two label volumes, with their label values."""
    joint, gt_ids, pred_ids, gt_size, pred_size = joint_histogram(gt_labels, pred_labels)
    union = gt_size[:, None] + pred_size[None, :] - joint
    iou = np.divide(joint, union, out=np.zeros(joint.shape), where=union > 0)
    return iou, gt_ids, pred_ids


def segmentation_f1(gt_labels: np.ndarray, pred_labels: np.ndarray, iou_threshold: float = 0.5) -> dict[str, float]:
    """Segmentation F1 of two instance label volumes matched one-to-one at mask IoU > ``iou_threshold``."""
    iou, gt_ids, pred_ids = instance_iou(gt_labels, pred_labels)
    rows, cols = match_one_to_one(iou, iou_threshold)
    out = detection_scores(len(rows), len(gt_ids), len(pred_ids))
    out["mean_matched_iou"] = float(iou[rows, cols].mean()) if len(rows) else 0.0
    return out


class _CountingF1(Metric):
    """Micro-averaged F1 over an epoch: sums TP / FP / FN of every image, F1 at the end."""

    def __init__(self, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._tp = self._gt = self._pred = 0

    def _count(self, pred: dict, gt: dict) -> dict | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, output) -> None:
        preds, gts = output
        for pred, gt in zip(preds, gts):
            scores = self._count(pred, gt)
            if scores is not None:
                self._tp += scores["tp"]
                self._gt += scores["tp"] + scores["fn"]
                self._pred += scores["tp"] + scores["fp"]

    def compute(self) -> float:
        return detection_scores(self._tp, self._gt, self._pred)["f1"]


class DetectionF1(_CountingF1):
    """Ignite metric: detection F1 at 3D IoU > ``iou_threshold``; output = (preds, gts) lists of dicts with
    ``boxes`` (pred) and ``box`` (gt)."""

    def __init__(self, iou_threshold: float = 0.4, output_transform: Callable = lambda x: x) -> None:
        self.iou_threshold = iou_threshold
        super().__init__(output_transform)

    def _count(self, pred: dict, gt: dict) -> dict:
        return detection_f1(gt["box"], pred["boxes"], self.iou_threshold)


class SegmentationF1(_CountingF1):
    """Ignite metric: segmentation F1 at mask IoU > ``iou_threshold`` (items without ``gt_instances`` skip)."""

    def __init__(self, iou_threshold: float = 0.5, output_transform: Callable = lambda x: x) -> None:
        self.iou_threshold = iou_threshold
        super().__init__(output_transform)

    def _count(self, pred: dict, gt: dict) -> dict | None:
        if gt.get("gt_instances") is None:
            return None
        return segmentation_f1(np.asarray(gt["gt_instances"]), np.asarray(pred["instances"]), self.iou_threshold)
