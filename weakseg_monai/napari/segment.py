"""Segment an image layer with a trained model: ``load_model`` + ``WeakSegPredictor``, as ``inference.json`` runs
them, so the labels equal what the bundle's inference writes for the same file.

The default model is the shipped nuclei model, ``bundle/models/model.pt`` of the repository: it is there in a
source checkout installed with ``pip install -e ".[napari]"``, not in a wheel (which does not carry ``bundle/``);
then choose a ``model.pt`` or a bundle folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakseg_monai.families import load_model
from weakseg_monai.inference import WeakSegPredictor
from weakseg_monai.napari.axes import from_display
from weakseg_monai.napari.boxes import WeakBoxes
from weakseg_monai.napari.layers import LayerDataTuple, boxes_layer, labels_layer, layer_spacing, new_item_id
from weakseg_monai.transforms.dictionary import finite_float32

BUNDLE_DIR = Path(__file__).resolve().parents[2] / "bundle"  # the repository's bundle/: a source checkout only
SHIPPED_MODEL = BUNDLE_DIR / "models" / "model.pt"
STEPS = ("loading the model", "predicting", "done")


def model_path(choice: str | Path | None = None) -> Path:
    """The ``model.pt`` for a choice: a file, a bundle folder (its ``models/model.pt``), or nothing for the shipped
    model (which needs a source checkout)."""
    if choice in (None, "", "."):
        if not SHIPPED_MODEL.is_file():
            raise FileNotFoundError(
                f"the shipped nuclei model is not at {SHIPPED_MODEL}: it comes with a source checkout installed with "
                "pip install -e \".[napari]\" (a wheel does not carry bundle/); choose a model.pt or a bundle folder"
            )
        return SHIPPED_MODEL
    path = Path(choice)
    if path.is_dir():
        for candidate in (path / "models" / "model.pt", path / "model.pt"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{path}: a bundle folder holds models/model.pt; none there")
    return path


def segment_steps(
    volume_xyz: np.ndarray, spacing: tuple[float, float, float], model: str | Path | None = None, device: str = "cpu"
) -> Iterator[int | dict[str, np.ndarray]]:
    """Yield the index of each step of ``STEPS`` as it starts, then the prediction (``WeakSegPredictor``'s dict)."""
    yield 0
    predictor = WeakSegPredictor(load_model(model_path(model), device), device=device)
    yield 1
    image = torch.from_numpy(finite_float32(np.asarray(volume_xyz), "image layer"))[None]
    prediction = predictor(image, spacing)
    yield 2
    yield prediction


def segment_volume(
    volume_xyz: np.ndarray, spacing: tuple[float, float, float], model: str | Path | None = None, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """The prediction for an (x, y, z) volume (``segment_steps`` run to the end)."""
    *_, prediction = segment_steps(volume_xyz, spacing, model, device)
    return prediction  # type: ignore[return-value]


def image_input(layer: Any) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """An Image layer's (x, y, z) volume, its spacing from the layer's ``scale``, and its item id."""
    return from_display(np.asarray(layer.data)), layer_spacing(layer), new_item_id(layer)


def prediction_layers(
    prediction: dict[str, np.ndarray], spacing: tuple[float, float, float], item_id: str
) -> list[LayerDataTuple]:
    """A prediction as a Labels layer (``instances``) and a layer of its boxes (``predicted_boxes``, scores in the
    metadata)."""
    instances = prediction["instances"]
    weak = WeakBoxes(prediction["boxes"].astype(np.float64), prediction["labels"], None)
    return [
        labels_layer(instances, spacing, item_id, "instances"),
        boxes_layer(weak, instances.shape, spacing, item_id, name=f"{item_id} predicted boxes",
                    role="predicted_boxes", scores=prediction["scores"].tolist()),
    ]
