"""Inference: one predictor, as a MONAI ``Inferer``, used by evaluation, the inference bundle config and the
benchmarks; the loader and writer the inference workflow composes around it."""

from weakseg_monai.inference.batch import BatchInference
from weakseg_monai.inference.inferer import WeakSegInferer, prepare_instance_batch
from weakseg_monai.inference.inputs import LoadInputd, input_items
from weakseg_monai.inference.outputs import save_prediction
from weakseg_monai.inference.predictor import BaselinePredictor, WeakSegPredictor
from weakseg_monai.inference.workflow import inference_evaluator, run_inference
from weakseg_monai.inference.writer import PredictionWriter

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
