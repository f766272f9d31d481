"""Metrics on hand-made label volumes whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from weakseg_monai.metrics import (
    ctc_det,
    ctc_seg,
    detection_f1,
    instance_iou,
    marker_f1,
    matching_curve,
    segmentation_f1,
)


def _volumes():
    gt = np.zeros((20, 20, 4), dtype=np.int32)
    gt[0:4, 0:4, :] = 1  # found exactly
    gt[10:14, 0:4, :] = 2  # found with a 3/4 overlap
    gt[0:4, 10:14, :] = 3  # missed
    gt[10:12, 10:14, :] = 4  # 4 and 5 merged into one result
    gt[12:14, 10:14, :] = 5
    pred = np.zeros_like(gt)
    pred[0:4, 0:4, :] = 7
    pred[10:14, 1:4, :] = 3
    pred[10:14, 10:14, :] = 9  # covers 4 and 5 fully (each is half of it)
    pred[16:18, 16:18, :] = 2  # false positive
    return gt, pred


def test_instance_iou_and_segmentation_f1():
    gt, pred = _volumes()
    iou, gt_ids, pred_ids = instance_iou(gt, pred)
    assert gt_ids.tolist() == [1, 2, 3, 4, 5] and pred_ids.tolist() == [2, 3, 7, 9]
    assert iou[0, 2] == 1.0 and iou[1, 1] == pytest.approx(0.75) and iou[3, 3] == pytest.approx(0.5)
    seg = segmentation_f1(gt, pred, 0.5)  # 0.5 is not > 0.5: the merged pair does not count
    assert (seg["tp"], seg["fp"], seg["fn"]) == (2, 2, 3)
    assert seg["f1"] == pytest.approx(2 * 2 / (5 + 4))
    assert seg["mean_matched_iou"] == pytest.approx((1 + 0.75) / 2)


def test_ctc_seg_and_det():
    gt, pred = _volumes()
    # references: 1 -> J 1, 2 -> J 0.75, 3 -> 0, 4 and 5 -> covered fully by 9 (J 0.5 each)
    assert ctc_seg(gt, pred) == pytest.approx((1 + 0.75 + 0 + 0.5 + 0.5) / 5)
    det = ctc_det(gt, pred)
    assert (det["splits"], det["fn"], det["fp"]) == (1, 1, 1)
    assert det["aogm_d"] == 5 + 10 + 1 and det["det"] == pytest.approx(1 - 16 / 50)
    assert ctc_det(gt, gt)["det"] == 1.0 and ctc_seg(gt, gt) == 1.0


def test_matching_curve_is_monotone():
    gt, pred = _volumes()
    curve = matching_curve(gt, pred)
    assert [round(r["threshold"], 1) for r in curve] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    tps = [r["tp"] for r in curve]
    assert tps == sorted(tps, reverse=True) and tps[0] == 3 and tps[-1] == 1
    assert curve[0]["accuracy"] == pytest.approx(3 / (3 + 1 + 2))


def test_detection_f1_is_one_to_one_at_iou_04():
    gt = np.array([[0, 0, 0, 10, 10, 10], [20, 20, 0, 30, 30, 10]])
    pred = np.array([[0, 0, 0, 10, 10, 10], [1, 1, 0, 11, 11, 10], [20, 20, 0, 24, 24, 10]])
    score = detection_f1(gt, pred, 0.4)
    assert (score["tp"], score["fp"], score["fn"]) == (1, 2, 1)
    assert detection_f1(gt, np.zeros((0, 6)))["recall"] == 0.0


def test_marker_f1():
    markers = np.array([[5, 5, 5], [20, 20, 5]])
    boxes = np.array([[0, 0, 0, 10, 10, 10], [0, 2, 0, 10, 12, 10], [40, 40, 0, 44, 44, 4]])
    score = marker_f1(markers, boxes, max_distance=5)
    assert (score["tp"], score["fp"], score["fn"]) == (1, 2, 1)


def test_float_and_large_labels_take_the_general_path():
    gt, pred = _volumes()
    fast = segmentation_f1(gt, pred, 0.3)
    assert segmentation_f1(gt.astype(np.float32), pred.astype(np.float32), 0.3) == fast
    big = np.where(pred > 0, pred + 100_000_000, 0)
    assert segmentation_f1(gt, big, 0.3) == fast
    assert ctc_seg(gt, big) == pytest.approx(ctc_seg(gt, pred))


def test_recall_is_split_between_objects_a_face_cuts_and_whole_ones():
    from weakseg_monai.metrics.instance import detection_recall_by_face
    from weakseg_monai.metrics.scoring import score_pair

    gt = np.zeros((32, 32, 16), dtype=np.int32)
    gt[0:3, 5:15, 4:10] = 1  # a sliver at the x = 0 face, found
    gt[20:30, 20:30, 15:16] = 2  # cut by the z face, missed
    gt[10:18, 18:26, 4:10] = 3  # whole, found
    pred = np.where(gt == 2, 0, gt)
    counts = detection_recall_by_face(
        np.array([[0, 5, 4, 3, 15, 10], [20, 20, 15, 30, 30, 16], [10, 18, 4, 18, 26, 10]]),
        np.array([[0, 5, 4, 3, 15, 10], [10, 18, 4, 18, 26, 10]]), gt.shape)
    assert counts == {"tp_face_cut": 1, "n_face_cut": 2, "tp_whole": 1, "n_whole": 1}
    row = score_pair(gt, pred)
    assert (row["recall_face_cut"], row["recall_whole"], row["n_face_cut"], row["n_whole"]) == (0.5, 1.0, 2, 1)
