"""What to annotate next: rank the boxes of an image that have no mask yet by how unsure a trained model is of
their shape (``weakseg_monai.inference.uncertainty``: disagreement between test-time flips, through the predictor
alone), and mark the top ones in the boxes layer for the user to paint next. No Qt: the widget calls these."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakseg_monai.families import load_model
from weakseg_monai.inference import WeakSegPredictor
from weakseg_monai.inference.uncertainty import FLIPS, annotation_order, flipped_predictions, mask_disagreement
from weakseg_monai.napari.boxes import WeakBoxes
from weakseg_monai.napari.layers import render_boxes, weak_meta
from weakseg_monai.napari.segment import model_path
from weakseg_monai.transforms.dictionary import finite_float32

STEPS = (
    "loading the model",
    *("predicting" + (", flipped in " + "".join("xyz"[a] for a in axes) if axes else "") for axes in FLIPS),
    "done",
)


@dataclass(frozen=True)
class Ranking:
    """``order``: indices of the boxes without a mask, most worth a voxel mask first; ``scores (N,)``: every box's
    disagreement in [0, 1] (1: no run found the object)."""

    order: np.ndarray
    scores: np.ndarray

    def top(self, n: int) -> list[int]:
        return [int(k) for k in self.order[: max(0, int(n))]]

    def text(self, n: int) -> str:
        """``box 12 (0.41), box 3 (0.38), ...`` for the top ``n``, by mask value (box index + 1, as drawn)."""
        picks = self.top(n)
        if not picks:
            return "every box has a mask"
        return ", ".join(f"box {k + 1} ({self.scores[k]:.2f})" for k in picks)


def rank_steps(
    volume_xyz: np.ndarray,
    spacing: tuple[float, float, float],
    weak: WeakBoxes,
    model: str | Path | None = None,
    device: str = "cpu",
    flips: Sequence[Sequence[int]] = FLIPS,
) -> Iterator[int | Ranking]:
    """Yield the index of each step of ``STEPS`` as it starts (0: loading the model, then one per flipped
    prediction), then the ``Ranking`` of ``weak``'s boxes on the (x, y, z) volume."""
    yield 0
    predictor = WeakSegPredictor(load_model(model_path(model), device), device=device)
    image = torch.from_numpy(finite_float32(np.asarray(volume_xyz), "image layer"))[None]
    runs = []
    for k, axes in enumerate(flips):
        yield k + 1
        runs.extend(flipped_predictions(predictor, image, spacing, [axes]))
    scores = mask_disagreement(runs, weak.boxes)
    yield Ranking(annotation_order(scores, weak.mask_annotated), scores)


def mark_next(layer: Any, ranking: Ranking, n: int) -> list[int]:
    """Mark the top ``n`` boxes of ``ranking`` in a boxes layer (drawn in ``NEXT_COLOUR`` until they get a mask);
    returns the marked box indices."""
    picks = ranking.top(n)
    weak_meta(layer)["next_to_annotate"] = picks
    render_boxes(layer)
    return picks


__all__ = ["STEPS", "Ranking", "mark_next", "rank_steps"]
