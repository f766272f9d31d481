"""Inference: one predictor, as a MONAI ``Inferer``, used by evaluation, the inference bundle config and the
benchmarks; the loader and writer the inference workflow composes around it."""

from weakseg_monai.inference.batch import BatchInference
from weakseg_monai.inference.inferer import WeakSegInferer, prepare_instance_batch
from weakseg_monai.inference.predictor import BaselinePredictor, WeakSegPredictor
from weakseg_monai.inference.writer import (
    LoadInputd,
    PredictionWriter,
    inference_evaluator,
    input_items,
    run_inference,
    save_prediction,
)

__all__ = [
    "BaselinePredictor",
    "BatchInference",
    "LoadInputd",
    "PredictionWriter",
    "WeakSegInferer",
    "WeakSegPredictor",
    "inference_evaluator",
    "input_items",
    "prepare_instance_batch",
    "run_inference",
    "save_prediction",
]
