"""Score folders of predicted instance label volumes against ground-truth ones (``score`` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weakseg_monai.data.instances import boxes_from_instances, relabel_consecutive
from weakseg_monai.data.io import read_volume
from weakseg_monai.inference.writer import INPUT_SUFFIXES, output_stem
from weakseg_monai.metrics.ctc import ctc_det, ctc_seg
from weakseg_monai.metrics.instance import detection_f1, detection_recall_by_face, segmentation_f1


def pair_files(gt_dir: str | Path, pred_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pairs (gt, pred): a prediction ``NAME_instances.*`` or ``NAME.*`` for each ground truth ``NAME[_gt].*``."""
    preds = {}
    for p in Path(pred_dir).iterdir():
        if p.name.lower().endswith(INPUT_SUFFIXES):
            preds[output_stem(p).removesuffix("_instances")] = p
    pairs, missing = [], []
    for g in sorted(Path(gt_dir).iterdir()):
        if not g.name.lower().endswith(INPUT_SUFFIXES):
            continue
        stem = output_stem(g)
        match = preds.get(stem) or preds.get(stem.removesuffix("_gt"))
        (pairs.append((g, match)) if match else missing.append(g.name))
    if missing:
        raise FileNotFoundError(f"no prediction for {len(missing)} ground-truth files, e.g. {missing[:3]}")
    if not pairs:
        raise FileNotFoundError(f"no label volumes in {gt_dir}")
    return pairs


def score_pair(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Detection F1 (boxes of the labels, 3D IoU > 0.4), segmentation F1 (IoU > 0.5), CTC SEG and DET, and the
    detection recall of the objects a face of the volume cuts (``recall_face_cut``) and of the others
    (``recall_whole``; NaN where a volume has none), with their counts."""
    gt_boxes = boxes_from_instances(relabel_consecutive(gt))
    pred_boxes = boxes_from_instances(relabel_consecutive(pred))
    det = detection_f1(gt_boxes, pred_boxes)
    by_face = detection_recall_by_face(gt_boxes, pred_boxes, gt.shape)
    seg = segmentation_f1(gt, pred)
    return {
        "det_f1": det["f1"],
        "seg_f1": seg["f1"],
        "mean_matched_iou": seg["mean_matched_iou"],
        "ctc_seg": ctc_seg(gt, pred),
        "ctc_det": ctc_det(gt, pred)["det"],
        "recall_face_cut": _ratio(by_face["tp_face_cut"], by_face["n_face_cut"]),
        "recall_whole": _ratio(by_face["tp_whole"], by_face["n_whole"]),
        "n_face_cut": by_face["n_face_cut"],
        "n_whole": by_face["n_whole"],
        "n_gt": seg["tp"] + seg["fn"],
        "n_pred": seg["tp"] + seg["fp"],
    }


def _ratio(hits: float, total: float) -> float:
    return hits / total if total else float("nan")


POOLED = ("recall_face_cut", "recall_whole")  # recalls pooled over volumes in the summary (counts in n_face_cut ...)


def score_folders(gt_dir: str | Path, pred_dir: str | Path) -> dict:
    """Per-volume rows and their summary: the mean of each column over volumes, except ``recall_face_cut`` and
    ``recall_whole``, which are pooled (hits over objects of all volumes: a volume may hold none of a kind)."""
    rows = []
    for g, p in pair_files(gt_dir, pred_dir):
        gt, pred = read_volume(g), read_volume(p)
        if gt.shape != pred.shape:
            raise ValueError(f"{p.name}: shape {pred.shape} differs from the ground truth {gt.shape}")
        rows.append({"id": output_stem(g), **score_pair(gt, pred)})
    keys = [k for k in rows[0] if k != "id"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys if k not in POOLED}
    for key, count in zip(POOLED, ("n_face_cut", "n_whole")):
        hits = sum(r[key] * r[count] for r in rows if r[count])
        mean[key] = _ratio(hits, sum(r[count] for r in rows))
    return {"items": rows, "mean": {k: mean[k] for k in keys}}
