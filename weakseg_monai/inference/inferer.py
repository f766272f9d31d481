"""``WeakSegInferer``: the predictor as a MONAI ``Inferer``, the piece an evaluator or a bundle config composes.

``SupervisedEvaluator`` calls ``inferer(inputs, network, **kwargs)`` with what its ``prepare_batch`` returns;
with ``prepare_instance_batch`` (below) that is a list of ``(1, X, Y, Z)`` volumes and
``spacing=[(x, y, z) per volume]``. Each volume runs through ``WeakSegPredictor`` unchanged: working-spacing
resampling and percentile normalisation (``ToWorkingGridd``; when the dataset's preprocessing already ran it,
``working_grid=[...]`` comes along and the predictor starts from there), the dense network (one pass, seam-free
sliding window or blockwise), the second stage once over the whole volume, and the mapping back to the input's
voxel grid.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer

from weakseg_monai.conventions import as_count, as_fraction, as_size
from weakseg_monai.data.datalist import flatten_items
from weakseg_monai.inference.predictor import WeakSegPredictor
from weakseg_monai.networks.family import unwrap


def ground_truth(item: dict) -> dict:
    """What scoring reads from a loaded item: ``id``, ``box (G, 6)`` and ``gt_instances (X, Y, Z)`` or None."""
    gt = item.get("gt_instances")
    return {
        "id": str(item.get("id", "")),
        "box": np.asarray(item["box"], dtype=np.float32).reshape(-1, 6),
        "gt_instances": None if gt is None else np.asarray(gt)[0],
    }


def prepare_instance_batch(batchdata, device=None, non_blocking: bool = False, **kwargs):
    """Loaded items (``DataLoader(collate_fn=no_collation)``) -> ``(images, labels, (), {"spacing": spacings})``
    (plus ``working_grid`` per item when the preprocessing ended with ``ToWorkingGridd``).

    ``images``: one ``(1, X, Y, Z)`` tensor per item (``None`` for an item whose loading failed, see
    ``LoadInputd``), kept on the CPU: the predictor moves each working-spacing volume to its device itself.
    ``labels``: ``ground_truth(item)`` for annotated items (with ``box``), else the item without its image
    (path, spacing, affine: what ``PredictionWriter`` needs). ``WeakSegInferer`` reads the spacings.
    """
    items = flatten_items(batchdata)
    images = [None if item.get("image") is None else torch.as_tensor(item["image"]) for item in items]
    labels = [
        ground_truth(item) if "box" in item else {k: v for k, v in item.items() if k != "image"} for item in items
    ]
    kwargs = {"spacing": [item.get("spacing") for item in items]}
    if any("working_grid" in item for item in items):
        kwargs["working_grid"] = [item.get("working_grid") for item in items]
    return images, labels, (), kwargs


PREDICTOR_FLAGS = {"roi_size": "--sw_roi_size", "overlap": "--sw_overlap", "sw_batch_size": "--sw_batch_size",
                   "max_whole_voxels": "--max_whole_voxels", "block_size": "--block_size"}


def check_predictor_kwargs(kwargs: dict) -> dict:
    """The predictor's sizes and counts, checked when the inferer is built (before any input is read), so a bad
    ``--block_size "[0,0,0]"`` fails at once naming its flag instead of planning half a million blocks."""
    checked = dict(kwargs)
    for key, flag in PREDICTOR_FLAGS.items():
        if key not in checked:
            continue
        if key in ("roi_size", "block_size"):
            checked[key] = as_size(checked[key], flag)
        elif key == "overlap":
            checked[key] = as_fraction(checked[key], flag, 0.0, 1.0, high_open=True)
        else:
            checked[key] = as_count(checked[key], flag)
    return checked


class WeakSegInferer(Inferer):
    """Run a ``WeakSegPredictor`` (or subclass) built around the evaluator's network.

    Args:
        predictor: a predictor class (built once per network with ``predictor_kwargs``) or a ready instance.
        score_floor: predict with the network's score threshold lowered to this value (training's validation,
            where ``ScoreThresholdCalibrator`` picks the threshold); ``None`` keeps the network's own.
        record_errors: an input whose prediction raises ``OSError`` / ``ValueError`` / ``RuntimeError`` gives
            ``{"error": message}`` instead of stopping the run (inference over many files reports all at the end).
        predictor_kwargs: ``roi_size``, ``overlap``, ``sw_batch_size``, ``max_whole_voxels``, ``block_size``,
            ``device`` of ``WeakSegPredictor``.
    """

    def __init__(
        self,
        predictor: type[WeakSegPredictor] | WeakSegPredictor = WeakSegPredictor,
        score_floor: float | None = None,
        record_errors: bool = False,
        **predictor_kwargs: Any,
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.score_floor = score_floor
        self.record_errors = record_errors
        self.predictor_kwargs = check_predictor_kwargs(predictor_kwargs)
        self._built: tuple[torch.nn.Module, WeakSegPredictor] | None = None

    def predictor_for(self, network: torch.nn.Module) -> WeakSegPredictor:
        """The predictor around ``network`` (the given instance, or one built and kept for this network)."""
        if isinstance(self.predictor, WeakSegPredictor):
            return self.predictor
        if self._built is None or self._built[0] is not network:
            self._built = (network, self.predictor(network, **self.predictor_kwargs))
        return self._built[1]

    @contextmanager
    def lowered_score_threshold(self, network: torch.nn.Module):
        """Predict with the model's score threshold lowered to ``score_floor`` (for calibration); the family
        decides what that means (``InstanceModel.lowered_score_threshold``)."""
        if self.score_floor is None:
            yield
            return
        with unwrap(network).lowered_score_threshold(self.score_floor):
            yield

    def predict(
        self, predictor: WeakSegPredictor, image: torch.Tensor, spacing: Sequence[float], grid: dict | None = None
    ) -> dict:
        """One ``(1, X, Y, Z)`` volume -> prediction dict at its own geometry, with ``seconds``. With ``grid``
        (``ToWorkingGridd`` ran in the dataset's preprocessing) the volume is already at the working grid."""
        start = time.perf_counter()
        try:
            image = torch.as_tensor(image)
            pred = predictor(image, spacing) if grid is None else predictor.predict_prepared(image, grid)
        except (OSError, ValueError, RuntimeError) as err:
            if not self.record_errors:
                raise
            return {"error": str(err)}
        pred["seconds"] = time.perf_counter() - start
        return pred

    def __call__(
        self,
        inputs: torch.Tensor | Sequence[torch.Tensor | None],
        network: torch.nn.Module,
        *args: Any,
        spacing: Sequence[float] | Sequence[Sequence[float] | None] = (1.0, 1.0, 1.0),
        working_grid: dict | Sequence[dict | None] | None = None,
        **kwargs: Any,
    ) -> dict | list[dict | None]:
        """A ``(1, X, Y, Z)`` volume and its spacing -> one prediction dict; a list of volumes (``None`` for
        inputs that failed to load) and a list of spacings -> a list of predictions (``None`` where no input).
        ``working_grid`` (one, or one per volume): the volumes went through ``ToWorkingGridd`` already."""
        predictor = self.predictor_for(network)
        with self.lowered_score_threshold(network):
            if isinstance(inputs, torch.Tensor):
                return self.predict(predictor, inputs, spacing, working_grid)  # type: ignore[arg-type]
            grids = working_grid if working_grid is not None else [None] * len(inputs)
            return [
                None if x is None else self.predict(predictor, x, s, g) for x, s, g in zip(inputs, spacing, grids)
            ]
