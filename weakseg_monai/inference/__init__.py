"""Inference: one predictor used by evaluation, the inference bundle config and the benchmarks."""

from weakseg_monai.inference.predictor import BaselinePredictor, WeakSegPredictor
from weakseg_monai.inference.writer import run_inference, save_prediction

__all__ = ["BaselinePredictor", "WeakSegPredictor", "run_inference", "save_prediction"]
