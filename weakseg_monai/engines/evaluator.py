"""``InstanceMetricsWriter``: a handler that scores every item an evaluator predicts and writes ``metrics.json`` +
``metrics.md``.

The evaluator itself is MONAI's ``SupervisedEvaluator`` composed in the configs: ``prepare_batch=
weakseg_monai.inference.prepare_instance_batch``, ``inferer=weakseg_monai.inference.WeakSegInferer(...)``,
``decollate=False``. Its output per iteration, ``{"image": [...], "pred": [prediction dicts at input geometry],
"label": [ground truth dicts]}``, is what ``weakseg_monai.metrics.DetectionF1`` / ``SegmentationF1`` read with
``output_transform=lambda x: (x["pred"], x["label"])``, and what this handler scores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from weakseg_monai.metrics.ctc import ctc_det, ctc_seg
from weakseg_monai.metrics.instance import detection_f1, segmentation_f1

logger = logging.getLogger(__name__)


def score_item(pred: dict, gt: dict, det_iou: float = 0.4, seg_iou: float = 0.5) -> dict:
    """Per-item row: detection F1 (3D IoU > det_iou) and, with ``gt_instances``, segmentation F1 and CTC
    SEG / DET."""
    det = detection_f1(gt["box"], pred["boxes"], det_iou)
    row = {
        "id": gt["id"],
        "n_gt": len(gt["box"]),
        "n_pred": len(pred["boxes"]),
        "det_f1": det["f1"],
        "det_precision": det["precision"],
        "det_recall": det["recall"],
    }
    if gt.get("gt_instances") is not None:
        seg = segmentation_f1(gt["gt_instances"], pred["instances"], seg_iou)
        row.update(
            seg_f1=seg["f1"],
            seg_precision=seg["precision"],
            seg_recall=seg["recall"],
            mean_matched_iou=seg["mean_matched_iou"],
            ctc_seg=ctc_seg(gt["gt_instances"], pred["instances"]),
            ctc_det=ctc_det(gt["gt_instances"], pred["instances"])["det"],
        )
    row["seconds"] = float(pred.get("seconds", float("nan")))
    return row


class InstanceMetricsWriter:
    """Ignite handler: score each evaluated item, then write ``metrics.json`` and ``metrics.md``."""

    def __init__(self, output_dir: str | Path, det_iou: float = 0.4, seg_iou: float = 0.5) -> None:
        self.output_dir = Path(output_dir)
        self.det_iou = det_iou
        self.seg_iou = seg_iou
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        for pred, gt in zip(engine.state.output[Keys.PRED], engine.state.output[Keys.LABEL]):
            row = score_item(pred, gt, self.det_iou, self.seg_iou)
            logger.info("%s", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            self.rows.append(row)

    def summary(self) -> dict:
        keys = [k for k in self.rows[0] if k not in ("id",)] if self.rows else []
        return {k: float(np.nanmean([r[k] for r in self.rows if k in r])) for k in keys}

    def write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        mean = self.summary()
        payload = {
            "det_iou_threshold": self.det_iou,
            "seg_iou_threshold": self.seg_iou,
            "mean": mean,
            "items": self.rows,
        }
        (self.output_dir / "metrics.json").write_text(json.dumps(payload, indent=4))
        columns = list(self.rows[0]) if self.rows else []
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in self.rows + [dict(mean, id="**mean**")]:
            lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
        header = (
            f"Detection F1 at 3D IoU > {self.det_iou}, segmentation F1 at mask IoU > {self.seg_iou}, "
            f"{len(self.rows)} items.\n\n"
        )
        (self.output_dir / "metrics.md").write_text(header + "\n".join(lines) + "\n")
        logger.info("mean over %d items: %s -> %s", len(self.rows), mean, self.output_dir / "metrics.json")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
