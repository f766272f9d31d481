"""Score folders of predicted instance label volumes against ground-truth ones (``score`` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weakseg_monai.data.instances import boxes_from_instances, relabel_consecutive
from weakseg_monai.data.io import read_volume
from weakseg_monai.inference.writer import INPUT_SUFFIXES, output_stem
from weakseg_monai.metrics.ctc import ctc_det, ctc_seg
from weakseg_monai.metrics.instance import detection_f1, segmentation_f1


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
    """Detection F1 (boxes of the labels, 3D IoU > 0.4), segmentation F1 (IoU > 0.5), CTC SEG and DET."""
    det = detection_f1(boxes_from_instances(relabel_consecutive(gt)), boxes_from_instances(relabel_consecutive(pred)))
    seg = segmentation_f1(gt, pred)
    return {
        "det_f1": det["f1"],
        "seg_f1": seg["f1"],
        "mean_matched_iou": seg["mean_matched_iou"],
        "ctc_seg": ctc_seg(gt, pred),
        "ctc_det": ctc_det(gt, pred)["det"],
        "n_gt": seg["tp"] + seg["fn"],
        "n_pred": seg["tp"] + seg["fp"],
    }


def score_folders(gt_dir: str | Path, pred_dir: str | Path) -> dict:
    rows = []
    for g, p in pair_files(gt_dir, pred_dir):
        gt, pred = read_volume(g), read_volume(p)
        if gt.shape != pred.shape:
            raise ValueError(f"{p.name}: shape {pred.shape} differs from the ground truth {gt.shape}")
        rows.append({"id": output_stem(g), **score_pair(gt, pred)})
    keys = [k for k in rows[0] if k != "id"]
    return {"items": rows, "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}}
