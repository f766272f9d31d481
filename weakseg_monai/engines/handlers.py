"""Ignite handlers of the training run: progress with ETA, the always-usable model files, score calibration.

Why our own: MONAI's ``StatsHandler`` logs every iteration without a total or an ETA, and its
``CheckpointSaver`` writes ``model.pt`` only when a validation metric improves (a run whose validation stays
at 0, or has none, leaves no model inference can load) and in place (a kill mid-save leaves a truncated file).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from weakseg_monai.metrics.instance import detection_f1, instance_iou, match_one_to_one
from weakseg_monai.networks.family import unwrap

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
FINAL_MODEL_FILE = "model_final.pt"


def save_atomic(obj: object, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: readers see the old file or
    the complete new one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".tmp_{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plain_state_dict(network: torch.nn.Module) -> dict:
    """The network's state dict without a DDP / DataParallel ``module.`` wrapper (what ``model.pt`` holds)."""
    module = unwrap(network)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


class TrainingProgress:
    """Log ``iteration i/N, loss parts, s/it, ETA`` every ``interval`` iterations and at the end."""

    def __init__(self, interval: int = 25) -> None:
        self.interval = max(1, int(interval))
        self._start = 0.0
        self._first = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._log)
        engine.add_event_handler(Events.COMPLETED, self._done)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self._first = engine.state.iteration

    def total(self, engine: Engine) -> int:
        return int(engine.state.max_epochs * engine.state.epoch_length)

    def _log(self, engine: Engine) -> None:
        i = engine.state.iteration
        if i % self.interval and i != self.total(engine):
            return
        done = max(i - self._first, 1)
        per_it = (time.perf_counter() - self._start) / done
        eta = per_it * (self.total(engine) - i)
        output = engine.state.output or {}
        parts = ", ".join(f"{k} {_number(v):.4f}" for k, v in output.items() if _is_number(v))
        logger.info("iteration %d/%d  %s  (%.2f s/it, ETA %s)", i, self.total(engine), parts, per_it, _clock(eta))

    def _done(self, engine: Engine) -> None:
        elapsed = _clock(time.perf_counter() - self._start)
        logger.info("training done: %d iterations in %s", engine.state.iteration, elapsed)


def _is_number(value: object) -> bool:
    """A float, or a one-element tensor (MONAI's ``SupervisedTrainer`` reports its ``loss`` so)."""
    return isinstance(value, float) or (isinstance(value, torch.Tensor) and value.numel() == 1)


def _number(value: float | torch.Tensor) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes = f"{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 3600}:{minutes}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class ModelSaver:
    """The checkpoint contract of a training run, in ``ckpt_dir``:

    - ``model.pt``: the best-validation weights when validation ran and its metric rose above 0, else the
      final weights;
    - ``model_final.pt``: the final weights, always.

    Both are plain state dicts (buffers carry the plan) that load into ``WeakInstanceSegNet()``, written
    atomically. Attach to the trainer (``attach``) and to the validation evaluator (``attach_evaluator``).
    """

    def __init__(self, network: torch.nn.Module, ckpt_dir: str | Path, metric_name: str = "val_det_f1") -> None:
        self.network = network
        self.ckpt_dir = Path(ckpt_dir)
        self.metric_name = metric_name
        self.best: float | None = None

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.COMPLETED, self.save_final)

    def attach_evaluator(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.save_if_best)

    def save_if_best(self, evaluator: Engine) -> None:
        value = evaluator.state.metrics.get(self.metric_name)
        if value is None or not np.isfinite(value) or value <= 0 or (self.best is not None and value <= self.best):
            return
        self.best = float(value)
        path = save_atomic(plain_state_dict(self.network), self.ckpt_dir / MODEL_FILE)
        logger.info("%s improved to %.4f: saved %s", self.metric_name, value, path)

    def save_final(self, trainer: Engine) -> None:
        state = plain_state_dict(self.network)
        save_atomic(state, self.ckpt_dir / FINAL_MODEL_FILE)
        if self.best is None:
            save_atomic(state, self.ckpt_dir / MODEL_FILE)
            logger.info("no validation improvement recorded: model.pt = the final weights")
        logger.info("models in %s: %s (best %s = %s), %s", self.ckpt_dir, MODEL_FILE, self.metric_name,
                    "n/a" if self.best is None else f"{self.best:.4f}", FINAL_MODEL_FILE)


SCORE_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


class ScoreThresholdCalibrator:
    """Pick the detection score threshold that maximises validation F1 and store it in the network's
    ``score_thresh`` buffer (so ``model.pt`` carries it).

    The evaluator must predict with a low score floor (``WeakSegInferer(score_floor=...)``): detections
    above any threshold of ``SCORE_GRID`` are then a prefix by score of what it returns (greedy NMS only
    suppresses by higher-scoring boxes), so each threshold is scored exactly for detection without
    re-running the network; segmentation F1 drops the instances below the threshold from the label volume.
    The objective is the mean of detection and segmentation F1 (detection alone without ``gt_instances``).
    Of the thresholds within ``tolerance`` of the best, a held-out validation set gets the highest (measured: the
    shipped model's validation F1 is flat from 0.05 to 0.3, while on 1 x 1 x 2 µm data 0.1 gives Det F1 0.39 and
    0.3 gives 0.71). With ``seen_data`` (the validation volumes are the training volumes, see
    ``load_validation_items``) it gets the middle one: on volumes it has learned, the model scores its objects
    higher than it will on new ones, so the top of that range can drop new objects. Measured on the suite's seven
    nuclei datasets (``scripts/generalisation.py``, no validation sections), test Det F1 with the highest / middle
    threshold: the same trained models, aniso5 0.959 / 0.985, low-snr-uint8 0.970 / 0.988, crowd 0.962 / 0.982,
    small-dense 0.977 / 0.983, large-sparse 0.897 / 0.886, hl60 and face-cut within 0.002; retrained with each rule
    (the threshold also picks the best checkpoint), aniso5 0.954 / 0.984, face-cut seed 1 0.698 / 0.751,
    small-dense 0.983 / 0.956, hl60 0.996 / 0.984, the other three within 0.005: no loss on average, and no
    threshold of 0.65-0.90 that drops a quarter of new objects.
    Sets ``engine.state.metrics[prefix + "det_f1"]``, ``[prefix + "seg_f1"]`` and ``["score_thresh"]``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        det_iou: float = 0.4,
        seg_iou: float = 0.5,
        prefix: str = "val_",
        tolerance: float = 0.01,
        seen_data: bool = False,
    ) -> None:
        self.network = network
        self.tolerance = float(tolerance)
        self.seen_data = bool(seen_data)
        self.det_iou = det_iou
        self.seg_iou = seg_iou
        self.prefix = prefix
        self._counts = np.zeros((len(SCORE_GRID), 2, 3))  # threshold x (det, seg) x (tp, n_gt, n_pred)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._calibrate)

    def _reset(self, _: Engine) -> None:
        self._counts[:] = 0

    def _collect(self, engine: Engine) -> None:
        for pred, gt in zip(engine.state.output[Keys.PRED], engine.state.output[Keys.LABEL]):
            self._counts += threshold_counts(pred, gt, SCORE_GRID, self.det_iou, self.seg_iou)

    def _calibrate(self, engine: Engine) -> None:
        tp, n_gt, n_pred = self._counts[..., 0], self._counts[..., 1], self._counts[..., 2]
        f1 = np.divide(2 * tp, n_gt + n_pred, out=np.zeros_like(tp), where=(n_gt + n_pred) > 0)
        has_seg = n_gt[:, 1].sum() > 0
        objective = (f1[:, 0] + (f1[:, 1] if has_seg else 0.0)) / (2.0 if has_seg else 1.0)
        # within `tolerance` of the best F1, held-out data: the highest threshold (a near-tie goes to the
        # conservative side, which costs little on data like the validation set and much less precision on shifted
        # data); seen data: the middle one (new objects score lower than learned ones)
        near_best = np.nonzero(objective >= objective.max() - self.tolerance)[0]
        best = int(near_best[(len(near_best) - 1) // 2] if self.seen_data else near_best.max())
        module = unwrap(self.network)
        if objective[best] <= 0:  # nothing found at any threshold: keep the current one
            best = int(np.argmin(np.abs(np.asarray(SCORE_GRID) - module.score_threshold())))
        threshold = SCORE_GRID[best]
        module.set_score_threshold(threshold)
        engine.state.metrics[self.prefix + "det_f1"] = float(f1[best, 0])
        if has_seg:
            engine.state.metrics[self.prefix + "seg_f1"] = float(f1[best, 1])
        engine.state.metrics["score_thresh"] = float(threshold)
        logger.info("score threshold calibrated to %.2f: det F1 %.4f, seg F1 %s", threshold, f1[best, 0],
                    f"{f1[best, 1]:.4f}" if has_seg else "n/a")


def threshold_counts(
    pred: dict, gt: dict, thresholds: Sequence[float], det_iou: float = 0.4, seg_iou: float = 0.5
) -> np.ndarray:
    """``(T, 2, 3)`` counts (tp, n_gt, n_pred) for detection and segmentation at each score threshold.

    ``pred``: ``boxes (K, 6)``, ``scores (K,)``, ``instances`` (value k + 1 = box k); ``gt``: ``box``,
    optional ``gt_instances``.
    """
    scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
    boxes = np.asarray(pred["boxes"]).reshape(-1, 6)
    gt_boxes = np.asarray(gt["box"]).reshape(-1, 6)
    out = np.zeros((len(thresholds), 2, 3))
    iou = pred_ids = None
    if gt.get("gt_instances") is not None:
        iou, _, pred_ids = instance_iou(np.asarray(gt["gt_instances"]), np.asarray(pred["instances"]))
    for t, threshold in enumerate(thresholds):
        keep = scores > threshold
        det = detection_f1(gt_boxes, boxes[keep], det_iou)
        out[t, 0] = (det["tp"], len(gt_boxes), int(keep.sum()))
        if iou is not None:
            kept_ids = np.nonzero(keep)[0] + 1
            columns = np.isin(pred_ids, kept_ids)
            rows, _ = match_one_to_one(iou[:, columns], seg_iou)
            out[t, 1] = (len(rows), iou.shape[0], int(columns.sum()))
    return out
