"""Score folders of predicted instance label volumes against ground-truth ones (``score`` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weakseg_monai.data.instances import boxes_from_instances, relabel_consecutive
from weakseg_monai.data.io import PREDICTION_SUFFIX, is_volume_path, read_volume, volume_stem
from weakseg_monai.metrics.ctc import ctc_det, ctc_seg
from weakseg_monai.metrics.instance import detection_f1, detection_recall_by_face, segmentation_f1


def prediction_files(pred_dir: str | Path) -> dict[str, Path]:
    """``NAME -> file`` of the predictions in ``pred_dir``: our outputs ``NAME_instances.*`` when the folder holds
    any (the images they were made from may sit beside them), else every label volume by its own name (another
    tool's outputs). Refuses a folder with two candidates for one NAME (``a_instances.nii.gz`` and
    ``a_instances.tif``) instead of letting directory order pick one."""
    folder = Path(str(pred_dir))
    if not folder.is_dir():
        raise FileNotFoundError(f"--pred {folder}: no such folder")
    volumes = [p for p in sorted(folder.iterdir()) if is_volume_path(p)]
    ours = [p for p in volumes if volume_stem(p).endswith(PREDICTION_SUFFIX)]
    found: dict[str, list[Path]] = {}
    for p in ours or volumes:
        found.setdefault(volume_stem(p).removesuffix(PREDICTION_SUFFIX), []).append(p)
    ambiguous = {name: paths for name, paths in found.items() if len(paths) > 1}
    if ambiguous:
        listed = "; ".join(" and ".join(p.name for p in paths) for paths in ambiguous.values())
        raise ValueError(f"{folder}: more than one prediction of the same volume ({listed}): keep one of each")
    return {name: paths[0] for name, paths in found.items()}


def pair_files(gt_dir: str | Path, pred_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pairs (gt, pred): the prediction (``prediction_files``) named ``NAME`` for each ground truth ``NAME[_gt].*``."""
    preds = prediction_files(pred_dir)
    gt_folder = Path(str(gt_dir))
    if not gt_folder.is_dir():
        raise FileNotFoundError(f"--gt {gt_folder}: no such folder")
    pairs, missing = [], []
    for g in sorted(gt_folder.iterdir()):
        if not is_volume_path(g):
            continue
        stem = volume_stem(g)
        match = preds.get(stem) or preds.get(stem.removesuffix("_gt"))
        (pairs.append((g, match)) if match else missing.append(g.name))
    if missing:
        raise FileNotFoundError(f"no prediction in {pred_dir} for {len(missing)} ground-truth files: {missing[:3]}")
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
        rows.append({"id": volume_stem(g), **score_pair(gt, pred)})
    keys = [k for k in rows[0] if k != "id"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys if k not in POOLED}
    for key, count in zip(POOLED, ("n_face_cut", "n_whole")):
        hits = sum(r[key] * r[count] for r in rows if r[count])
        mean[key] = _ratio(hits, sum(r[count] for r in rows))
    return {"items": rows, "mean": {k: mean[k] for k in keys}}
