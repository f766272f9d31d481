"""The inference workflow ``inference.json`` composes, built in Python: ``inference_evaluator`` (a MONAI
``SupervisedEvaluator`` over ``input_items`` with ``LoadInputd`` + the model's input rule and a ``PredictionWriter``)
and ``run_inference`` (predict every input of a path and write its outputs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import DataLoader, Dataset
from monai.data.utils import no_collation
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose

from weakseg_monai.inference.inferer import WeakSegInferer, prepare_instance_batch
from weakseg_monai.inference.inputs import LoadInputd, input_items
from weakseg_monai.inference.writer import PredictionWriter


def inference_evaluator(
    inferer: WeakSegInferer,
    network: torch.nn.Module,
    input_path: str | Path,
    output_dir: str | Path,
    preview: bool = True,
    spacing: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[SupervisedEvaluator, PredictionWriter]:
    """The inference workflow ``inference.json`` composes, built in Python: ``Dataset(input_items, LoadInputd +
    ToWorkingGridd)``,
    ``DataLoader(no_collation)``, ``SupervisedEvaluator(prepare_instance_batch, inferer)`` and a
    ``PredictionWriter``."""
    preprocessing = Compose([LoadInputd(spacing=spacing), inferer.predictor_for(network).working_grid()])
    dataset = Dataset(input_items(input_path), transform=preprocessing)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0, collate_fn=no_collation)
    writer = PredictionWriter(output_dir, preview)
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=loader,
        network=network,
        prepare_batch=prepare_instance_batch,
        inferer=inferer,
        val_handlers=[writer],
        decollate=False,
    )
    return evaluator, writer


def run_inference(
    predictor,
    input_path: str | Path,
    output_dir: str | Path,
    preview: bool = True,
    spacing: Sequence[float] | None = None,
) -> list[dict]:
    """Predict every input (one file or a folder) and write its outputs; raise at the end if any failed.

    ``spacing``: (x, y, z) µm for every input, overriding the files' own (e.g. TIFFs without metadata).

    Returns one summary dict per input (path, instances, seconds).
    """
    inferer = WeakSegInferer(predictor, record_errors=True)
    evaluator, writer = inference_evaluator(
        inferer, predictor.network, input_path, output_dir, preview, spacing, predictor.device
    )
    evaluator.run()
    return writer.summaries


__all__ = ["inference_evaluator", "run_inference"]
