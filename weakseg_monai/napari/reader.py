"""The npe2 reader: our inputs and outputs as napari layers, with ``scale`` from the spacing.

- a NIfTI / TIFF volume -> an Image layer (spacing by the project's rule: NIfTI header, TIFF ImageJ / OME metadata,
  else 1 µm with a warning);
- an OME-Zarr volume (``NAME.ome.zarr``, the ``[scale]`` extra) -> a multiscale Image layer, read lazily (napari
  reads the chunks on screen: volumes larger than memory open); our ``NAME_instances.ome.zarr`` -> a multiscale
  Labels layer of its ``labels/instances``;
- ``NAME_instances.*`` (our predictions) -> a Labels layer;
- ``NAME_boxes.json`` (what inference writes) -> a boxes layer of the predicted boxes;
- a dataset folder or its ``datalist.json`` -> per item its image, ground truth (hidden), mask and boxes layers,
  ready for more annotation (only the first item's layers visible).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from weakseg_monai.data.datalist import DATALIST_NAME, SECTIONS, datalist_path, item_id, read_datalist
from weakseg_monai.data.io import (
    BOXES_SUFFIX,
    PREDICTION_SUFFIX,
    VOLUME_SUFFIXES,
    is_nifti,
    is_zarr,
    nifti_affine,
    read_volume,
    resolve_spacing,
    volume_shape,
    volume_stem,
)
from weakseg_monai.data.omezarr import open_zarr_levels
from weakseg_monai.napari.boxes import WeakBoxes
from weakseg_monai.napari.layers import LayerDataTuple, boxes_layer, image_layer, labels_layer, multiscale_layer

logger = logging.getLogger(__name__)
ITEM_FIELDS = ("id", "image", "box", "label", "mask", "mask_annotated", "spacing", "gt_instances")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerDataTuple]] | None:
    """npe2 ``get_reader``: a reader for a path we understand (or a list of them), else None."""
    paths = path if isinstance(path, list) else [path]
    return read_paths if paths and all(_readable(Path(p)) for p in paths) else None


def _readable(path: Path) -> bool:
    if is_zarr(path):
        return path.is_dir()
    if path.is_dir():
        return (path / DATALIST_NAME).is_file()
    name = path.name.lower()
    return name == DATALIST_NAME or name.endswith(BOXES_SUFFIX) or name.endswith(VOLUME_SUFFIXES)


def read_paths(path: str | list[str]) -> list[LayerDataTuple]:
    """The layers of each path, in order."""
    layers: list[LayerDataTuple] = []
    for p in path if isinstance(path, list) else [path]:
        layers += read_path(Path(p))
    return layers


def read_path(path: Path) -> list[LayerDataTuple]:
    if is_zarr(path):
        return [read_zarr_layer(path)]
    if path.is_dir() or path.name.lower() == DATALIST_NAME:
        return read_dataset(path)
    if path.name.lower().endswith(BOXES_SUFFIX):
        return [read_boxes_json(path)]
    return [read_volume_layer(path)]


def read_volume_3d(path: Path) -> np.ndarray:
    """A volume in (x, y, z); a single trailing channel is dropped, anything else but 3D is refused."""
    array = read_volume(path)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D (x, y, z) volume, got shape {array.shape}")
    return array


def read_volume_layer(path: Path) -> LayerDataTuple:
    """An image (Image layer, ``id`` = its stem) or our ``NAME_instances.*`` prediction (Labels layer)."""
    array, spacing, stem = read_volume_3d(path), resolve_spacing(path), volume_stem(path)
    if stem.endswith(PREDICTION_SUFFIX):
        return labels_layer(array, spacing, stem[: -len(PREDICTION_SUFFIX)], "instances", source=str(path))
    affine = nifti_affine(path).tolist() if is_nifti(path) else None
    return image_layer(array, spacing, stem, source=str(path), affine=affine)


def read_zarr_layer(path: Path) -> LayerDataTuple:
    """An OME-Zarr image as a multiscale Image layer; our ``NAME_instances.ome.zarr`` as a multiscale Labels layer
    (both lazy)."""
    levels, spacing = open_zarr_levels(path)
    stem = volume_stem(path)
    if stem.endswith(PREDICTION_SUFFIX):
        return multiscale_layer(levels, spacing, stem[: -len(PREDICTION_SUFFIX)], "labels", "instances",
                                source=str(path))
    return multiscale_layer(levels, spacing, stem, "image", "image", source=str(path))


def read_boxes_json(path: Path) -> LayerDataTuple:
    """Inference's ``NAME_boxes.json`` as a layer of predicted boxes (scores in its metadata)."""
    payload = json.loads(path.read_text())
    boxes = np.asarray(payload.get("boxes", []), dtype=np.float64).reshape(-1, 6)
    image = Path(str(payload.get("image", "")))
    if image.is_file():
        shape = volume_shape(image)
    else:  # the image moved: the boxes' own extent
        shape = tuple(int(np.ceil(v)) for v in boxes[:, 3:].max(axis=0)) if len(boxes) else (1, 1, 1)
    stem = path.name[: -len(BOXES_SUFFIX)]
    weak = WeakBoxes(boxes, payload.get("labels"), None)
    return boxes_layer(
        weak,
        shape,
        payload.get("spacing") or (1.0, 1.0, 1.0),
        stem,
        name=f"{stem} predicted boxes",
        role="predicted_boxes",
        scores=payload.get("scores", []),
        source=str(path),
    )


def read_dataset(path: Path) -> list[LayerDataTuple]:
    """Every item of a dataset (folder or ``datalist.json``): image, gt_instances (hidden), mask and boxes layers,
    each carrying the item's id, section and datalist paths so that saving writes the same item back."""
    datalist = datalist_path(path)
    base = datalist.parent
    layers: list[LayerDataTuple] = []
    for section in SECTIONS:
        for index, raw in enumerate(read_datalist(datalist).get(section) or []):
            layers += item_layers_from_datalist(raw, section, index, base, visible=not layers)
    return layers


def item_layers_from_datalist(
    raw: dict, section: str, index: int, base: Path, visible: bool
) -> list[LayerDataTuple]:
    """The layers of one datalist item."""
    name = item_id(raw, index)
    image_path = base / raw["image"]
    image = read_volume_3d(image_path)
    spacing = resolve_spacing(image_path, raw.get("spacing"))
    shape = tuple(int(s) for s in image.shape)
    origin = {"section": section, "dataset": str(base.resolve())}
    extra = {k: v for k, v in raw.items() if k not in ITEM_FIELDS}
    affine = nifti_affine(image_path).tolist() if is_nifti(image_path) else None
    layers = [
        image_layer(
            image, spacing, name, visible, source=str(image_path), relpath=raw["image"], affine=affine,
            spacing_given="spacing" in raw, extra=extra, **origin,
        )
    ]
    if raw.get("gt_instances"):
        gt_path = base / raw["gt_instances"]
        layers.append(
            labels_layer(read_volume_3d(gt_path), spacing, name, "gt_instances", False, source=str(gt_path),
                         relpath=raw["gt_instances"], **origin)
        )
    if raw.get("mask"):
        mask_path = base / raw["mask"]
        mask, mask_meta = read_volume_3d(mask_path), {"source": str(mask_path), "relpath": raw["mask"]}
    else:
        mask, mask_meta = np.zeros(shape, dtype=np.uint16), {}
    layers.append(labels_layer(mask, spacing, name, "mask", visible, **mask_meta, **origin))
    layers.append(boxes_layer(WeakBoxes.from_item(raw), shape, spacing, name, visible, **origin))
    return layers
