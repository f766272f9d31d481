"""Our volumes, boxes and masks as napari layers, and back.

Every layer the plugin makes carries ``metadata["weakseg"]``: its ``role`` (``image``, ``boxes``, ``mask``,
``gt_instances``, ``instances``), the item ``id`` it belongs to, and what saving needs (spacing, source file,
datalist section, the item's other fields). A boxes layer's ``metadata["weakseg"]["boxes"]`` is its ``WeakBoxes``,
the source of truth; its rectangles (one per box and z slice) are a view redrawn from it (``render_boxes``).
Layers are built as napari ``LayerDataTuple`` s, so the reader and the widgets share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weakseg_monai.napari.axes import (
    levels_to_display,
    points_to_display,
    scale_from_spacing,
    spacing_from_scale,
    to_display,
)
from weakseg_monai.napari.boxes import WeakBoxes, rectangles

META = "weakseg"
ANNOTATED_COLOUR = "#ffd700"  # a box with a painted mask
BOX_ONLY_COLOUR = "#00e5ff"  # a box without one
NEXT_COLOUR = "#ff00ff"  # a box without one that the ranking puts next (``weakseg_monai.napari.rank``)
BOX_FEATURES = ("box_index", "mask_value", "label", "mask_annotated")

LayerDataTuple = tuple[Any, dict, str]


def weak_meta(layer: Any) -> dict:
    """The plugin's metadata of a layer (empty for other layers)."""
    return layer.metadata.get(META, {}) if hasattr(layer, "metadata") else {}


def role_of(layer: Any) -> str | None:
    return weak_meta(layer).get("role")


def item_layers(layers: Sequence[Any], item_id: str) -> dict[str, Any]:
    """The layers of one item, by role (the first of each role)."""
    found: dict[str, Any] = {}
    for layer in layers:
        meta = weak_meta(layer)
        if meta.get("id") == item_id and meta.get("role"):
            found.setdefault(meta["role"], layer)
    return found


def image_layer(
    volume_xyz: np.ndarray, spacing: Sequence[float], item_id: str, visible: bool = True, **meta: Any
) -> LayerDataTuple:
    """An (x, y, z) volume as an Image layer; ``meta``: source, affine, section, dataset, extra item fields."""
    return (
        to_display(volume_xyz),
        {
            "name": item_id,
            "scale": scale_from_spacing(spacing),
            "visible": visible,
            "metadata": {META: {"role": "image", "id": item_id, "spacing": list(spacing), **meta}},
        },
        "image",
    )


def labels_layer(
    volume_xyz: np.ndarray, spacing: Sequence[float], item_id: str, role: str, visible: bool = True, **meta: Any
) -> LayerDataTuple:
    """An (x, y, z) instance label volume (value k marks box k - 1) as a Labels layer of ``role``."""
    return (
        to_display(volume_xyz),
        {
            "name": f"{item_id} {role}",
            "scale": scale_from_spacing(spacing),
            "visible": visible,
            "metadata": {META: {"role": role, "id": item_id, "spacing": list(spacing), **meta}},
        },
        "labels",
    )


def multiscale_layer(
    levels_xyz: Sequence, spacing: Sequence[float], item_id: str, kind: str, role: str, **meta: Any
) -> LayerDataTuple:
    """Lazy resolution levels (x, y, z, full resolution first; an OME-Zarr volume) as a multiscale ``kind``
    ("image" or "labels") layer: napari reads only the chunks on screen, so a volume larger than memory opens."""
    name = item_id if kind == "image" else f"{item_id} {role}"
    kwargs = {
        "name": name,
        "scale": scale_from_spacing(spacing),
        "multiscale": True,
        "metadata": {META: {"role": role, "id": item_id, "spacing": list(spacing), **meta}},
    }
    if kind == "image":  # the contrast our previews use, from the smallest level (napari's default is the dtype range)
        low, high = np.percentile(np.asarray(levels_xyz[-1]), (1.0, 99.8))
        kwargs["contrast_limits"] = (float(low), float(max(high, low + 1e-6)))
    return levels_to_display(levels_xyz), kwargs, kind


def box_view(
    weak: WeakBoxes, next_up: Sequence[int] = ()
) -> tuple[list[tuple[np.ndarray, str]], dict[str, np.ndarray], list[str]]:
    """Shapes data (rectangles in (z, y, x)), features and edge colours of the rectangles drawn for ``weak``; the
    boxes in ``next_up`` without a mask in ``NEXT_COLOUR``."""
    vertices, owners = rectangles(weak.boxes)
    data = [(points_to_display(v), "rectangle") for v in vertices]
    features = {
        "box_index": owners,
        "mask_value": owners + 1,
        "label": weak.label[owners],
        "mask_annotated": weak.mask_annotated[owners],
    }
    marked = set(int(k) for k in next_up)
    colours = [
        ANNOTATED_COLOUR if weak.mask_annotated[k] else NEXT_COLOUR if int(k) in marked else BOX_ONLY_COLOUR
        for k in owners
    ]
    return data, features, colours


def boxes_layer(
    weak: WeakBoxes,
    shape_xyz: Sequence[int],
    spacing: Sequence[float],
    item_id: str,
    visible: bool = True,
    name: str | None = None,
    **meta: Any,
) -> LayerDataTuple:
    """``weak`` as a Shapes layer: rectangles on every slice each box covers, box index k + 1 (its mask value) as
    text; ``metadata["weakseg"]["boxes"]`` holds ``weak`` itself."""
    data, features, colours = box_view(weak)
    return (
        [v for v, _ in data],
        {
            "name": name or f"{item_id} boxes",
            "shape_type": "rectangle",
            "scale": scale_from_spacing(spacing),
            "features": features,
            "feature_defaults": {"box_index": -1, "mask_value": 0, "label": 0, "mask_annotated": False},
            "edge_color": colours or BOX_ONLY_COLOUR,
            "face_color": "transparent",
            "edge_width": 1,
            "text": {"string": "{mask_value}", "size": 8, "color": "white"},
            "visible": visible,
            "ndim": 3,
            "metadata": {
                META: {
                    "role": "boxes",
                    "id": item_id,
                    "spacing": list(spacing),
                    "image_shape": [int(s) for s in shape_xyz],
                    "boxes": weak,
                    **meta,
                }
            },
        },
        "shapes",
    )


def render_boxes(layer: Any) -> None:
    """Redraw a boxes layer's rectangles from its ``WeakBoxes`` (the view follows the source of truth), the boxes the
    ranking put next (``next_to_annotate``) marked."""
    meta = weak_meta(layer)
    weak: WeakBoxes = meta["boxes"]
    data, features, colours = box_view(weak, meta.get("next_to_annotate", ()))
    layer.selected_data = set()
    layer.data = data
    layer.features = features
    if colours:
        layer.edge_color = colours


def layer_spacing(layer: Any) -> tuple[float, float, float]:
    """(x, y, z) µm of a layer, from its ``scale``."""
    return spacing_from_scale(layer.scale)


def new_item_id(layer: Any) -> str:
    """The id an image layer's item gets: its own, or its name."""
    return str(weak_meta(layer).get("id") or layer.name)


def source_path(layer: Any) -> Path | None:
    source = weak_meta(layer).get("source")
    return Path(source) if source else None
