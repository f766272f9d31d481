"""``WeakSegEvaluator``: MONAI's ``SupervisedEvaluator`` running ``WeakSegPredictor`` on whole volumes, and
``InstanceMetricsWriter``, a handler that scores every item and writes ``metrics.json`` + ``metrics.md``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator
from monai.utils.enums import CommonKeys as Keys

from weakseg_monai.engines.trainer import _flatten
from weakseg_monai.inference.predictor import WeakSegPredictor
from weakseg_monai.metrics.ctc import ctc_det, ctc_seg
from weakseg_monai.metrics.instance import detection_f1, segmentation_f1

logger = logging.getLogger(__name__)


def _ground_truth(item: dict) -> dict:
    gt = item.get("gt_instances")
    return {
        "id": str(item.get("id", "")),
        "box": np.asarray(item["box"], dtype=np.float32).reshape(-1, 6),
        "gt_instances": None if gt is None else np.asarray(gt)[0],
    }


class WeakSegEvaluator(SupervisedEvaluator):
    """Evaluator over loaded items (``LoadWeakAnnotationd(load_gt=True)``, batch of 1, ``no_collation``).

    ``predictor`` defaults to ``WeakSegPredictor(network)``; pass a ``BaselinePredictor`` for the baseline.
    ``score_floor``: predict with this low score threshold instead of the network's own (training's
    validation, where ``ScoreThresholdCalibrator`` picks the threshold).
    Output per iteration: ``{"pred": [prediction dicts at input geometry], "label": [ground truth dicts]}``,
    the form ``weakseg_monai.metrics.DetectionF1`` / ``SegmentationF1`` read with
    ``output_transform=lambda x: (x["pred"], x["label"])``.
    """

    def __init__(
        self,
        device,
        val_data_loader,
        network,
        predictor_kwargs: dict | None = None,
        predictor: WeakSegPredictor | None = None,
        score_floor: float | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(device, val_data_loader, network, **kwargs)
        self.predictor = predictor or WeakSegPredictor(network, device=device, **(predictor_kwargs or {}))
        self.score_floor = score_floor

    @contextmanager
    def _score_floor(self):
        """Predict with the network's score threshold lowered to ``score_floor`` (for calibration)."""
        module = getattr(self.network, "module", self.network)
        if self.score_floor is None or not hasattr(module, "score_thresh"):
            yield
            return
        saved, saved_topk = module.score_thresh.clone(), module.topk_candidates
        module.score_thresh.fill_(self.score_floor)
        module.topk_candidates = saved_topk * 4  # a low floor lets more candidates through to NMS
        try:
            yield
        finally:
            module.score_thresh.copy_(saved)
            module.topk_candidates = saved_topk

    def _iteration(self, engine: WeakSegEvaluator, batchdata: Sequence) -> dict:
        preds, labels = [], []
        for item in _flatten(batchdata):
            start = time.perf_counter()
            with engine._score_floor():
                pred = engine.predictor(torch.as_tensor(item["image"]), item["spacing"])
            pred["seconds"] = time.perf_counter() - start
            preds.append(pred)
            labels.append(_ground_truth(item))
        engine.state.output = {Keys.PRED: preds, Keys.LABEL: labels}
        return engine.state.output


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
