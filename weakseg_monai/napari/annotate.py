"""Drawing and editing 3D boxes and painting their masks in napari, without Qt (``ViewerModel`` runs it all).

The gestures (one box in at most three):

1. **Draw** a rectangle (the boxes layer's rectangle tool, ``R``) around the nucleus on any slice through it. It
   becomes a box with that x / y extent and a z extent centred on the slice, as deep as the median box so far (as
   deep as wide for the first box, in µm).
2. and 3. **Shift-Z** on the nucleus's first slice and on its last slice: the nearer z end of the box (the one just
   drawn, or the selected one) moves to the slice shown, so the box spans exactly those slices. Skip them when the
   guessed depth already fits.

Editing: select a rectangle (``S``) on any slice of a box and move or resize it: the box's x / y extent follows on
every slice. Deleting a rectangle (``Delete``) deletes its box (its mask voxels too; later mask values move down).

Masks: **Shift-M** with a box selected switches to its mask layer, painting with that box's value (k + 1 for box k).
Painting grows a box to hold every painted voxel and sets its ``mask_annotated``; painting with a new value makes a
new box around the painted voxels; **Shift-F** fits the selected boxes to their painted voxels (smaller or larger).

``BoxAnnotator`` keeps one boxes layer and its mask layer in step; ``attach(viewer)`` gives every boxes layer of a
viewer (now and later) its annotator and key bindings.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from napari.layers.base._base_constants import ActionType

from weakseg_monai.napari.axes import from_display, point_from_display
from weakseg_monai.napari.boxes import (
    WeakBoxes,
    box_from_rectangle,
    box_slices,
    fit_to_mask,
    grow_to_mask,
    rectangle_of,
    remove_boxes,
    with_xy_from_rectangle,
    with_z_end_at,
)
from weakseg_monai.napari.layers import (
    META,
    boxes_layer,
    item_layers,
    labels_layer,
    layer_spacing,
    new_item_id,
    render_boxes,
    weak_meta,
)

SETTLED = (ActionType.ADDED, ActionType.CHANGED, ActionType.REMOVED)
_ANNOTATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ATTACHED: weakref.WeakSet = weakref.WeakSet()  # viewers whose new layers get linked


class BoxAnnotator:
    """Keeps a boxes layer (its ``WeakBoxes`` and the rectangles drawn from it) and its mask layer in step."""

    def __init__(self, boxes: Any, mask: Any | None = None) -> None:
        self.layer = boxes
        self.mask_layer = mask
        self.last_box: int | None = None  # the box the z-end keys move when no rectangle is selected
        self._busy = False
        boxes.events.data.connect(self._on_rectangles_changed)
        if mask is not None:
            self.link_mask(mask)

    def link_mask(self, mask: Any) -> None:
        """Follow the painting in ``mask`` (value k + 1 marks box k)."""
        self.mask_layer = mask
        mask.events.paint.connect(self._on_mask_painted)
        mask.events.data.connect(self._on_mask_painted)

    # --- state -------------------------------------------------------------------------------------------------
    @property
    def weak(self) -> WeakBoxes:
        return weak_meta(self.layer)["boxes"]

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return tuple(weak_meta(self.layer)["image_shape"])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return layer_spacing(self.layer)

    def mask_xyz(self) -> np.ndarray | None:
        """The mask layer's voxels in (x, y, z) (a view: editing it edits the layer)."""
        return None if self.mask_layer is None else from_display(self.mask_layer.data)

    def commit(self, weak: WeakBoxes) -> None:
        """Make ``weak`` the source of truth and redraw the rectangles from it (a removed box renumbers the boxes, so
        the ranking's marks, which name boxes by index, go with it)."""
        meta = weak_meta(self.layer)
        if len(weak) < len(meta["boxes"]):
            meta.pop("next_to_annotate", None)
        meta["boxes"] = weak
        self._busy = True
        try:
            render_boxes(self.layer)
            if self.mask_layer is not None:
                self.mask_layer.refresh()
        finally:
            self._busy = False

    def selected_boxes(self) -> list[int]:
        """Box indices of the selected rectangles, else the box drawn or edited last."""
        owners = self.layer.features["box_index"].to_numpy()
        chosen = sorted({int(owners[i]) for i in self.layer.selected_data if owners[i] >= 0})
        if chosen:
            return chosen
        return [self.last_box] if self.last_box is not None and self.last_box < len(self.weak) else []

    # --- gestures ----------------------------------------------------------------------------------------------
    def add_box(self, box: np.ndarray, label: int = 0) -> int:
        """Add a box programmatically (what gesture 1 does); returns its index."""
        weak = self.weak.copy()
        self.last_box = weak.append(box, label)
        self.commit(weak)
        return self.last_box

    def set_z_end(self, z_slice: int, indices: list[int] | None = None) -> None:
        """Gestures 2 and 3: the nearer z end of the selected (or last) boxes moves to ``z_slice``."""
        weak = self.weak.copy()
        for k in self.selected_boxes() if indices is None else indices:
            weak.boxes[k] = with_z_end_at(weak.boxes[k], z_slice, self.shape_xyz)
            self.last_box = k
        self.commit(weak)

    def fit_to_mask(self, indices: list[int] | None = None) -> None:
        """Boxes become the extent of their painted voxels (Shift-F)."""
        mask = self.mask_xyz()
        if mask is not None:
            self.commit(fit_to_mask(self.weak, mask, self.selected_boxes() if indices is None else indices))

    def remove(self, indices: list[int]) -> None:
        """Delete boxes, clearing their mask voxels and moving later mask values down."""
        self.commit(remove_boxes(self.weak, indices, self.mask_xyz()))

    # --- following napari's edits ------------------------------------------------------------------------------
    def _on_rectangles_changed(self, event: Any) -> None:
        if not self._busy and getattr(event, "action", None) in SETTLED:
            self.sync_from_rectangles()

    def sync_from_rectangles(self) -> None:
        """Read the user's edits off the rectangles: a new rectangle is a new box (gesture 1), a moved or resized
        one sets its box's x / y extent, a deleted one deletes its box; then redraw."""
        weak = self.weak.copy()
        owners = self.layer.features["box_index"].to_numpy().astype(np.int64)
        vertices = [point_from_display_rows(v) for v in self.layer.data]
        drawn = [v for v, k in zip(vertices, owners) if k < 0]
        before = self.weak.boxes
        for v, k in zip(vertices, owners):  # compared with the boxes before the edit: one moved rectangle wins
            if k >= 0 and not _same_rectangle(v, rectangle_of(before[k], v[0, 2])):
                weak.boxes[k] = with_xy_from_rectangle(weak.boxes[k], v, self.shape_xyz)
                self.last_box = int(k)
        shown = np.bincount(owners[owners >= 0], minlength=len(weak))
        deleted = [k for k, box in enumerate(weak.boxes) if shown[k] < len(box_slices(box))]
        weak = remove_boxes(weak, deleted, self.mask_xyz())
        for v in drawn:
            self.last_box = weak.append(box_from_rectangle(v, self.shape_xyz, self.spacing, weak.boxes))
        self.commit(weak)

    def _on_mask_painted(self, event: Any = None) -> None:
        if self._busy:
            return
        for atom in getattr(event, "value", None) or []:
            _apply_paint(self.mask_layer.data, atom)
        self.sync_from_mask()

    def sync_from_mask(self) -> None:
        """After painting: boxes grow to their voxels, flags follow the mask, new values become new boxes."""
        mask = self.mask_xyz()
        if mask is None:
            return
        weak = grow_to_mask(self.weak, mask)
        if len(weak) > len(self.weak):
            self.last_box = len(weak) - 1
        self.commit(weak)


def _apply_paint(data: np.ndarray, atom: Any) -> None:
    """Write one paint event's edit into ``data``. napari 0.9 emits ``paint`` for a single ``Labels.paint`` call
    before it writes the voxels (after a brush stroke, once they are written), so the annotator writes the same
    values first. An atom is napari's masked edit (``slice_key``, ``mask``, ``new_value``) or an
    ``(indices, old, new)`` tuple."""
    if hasattr(atom, "slice_key"):
        if atom.mask is None:
            data[atom.slice_key] = atom.new_value
        else:
            region = np.asarray(data[atom.slice_key])
            region[atom.mask] = atom.new_value
            data[atom.slice_key] = region
    elif isinstance(atom, tuple) and len(atom) == 3:
        data[atom[0]] = atom[2]


def point_from_display_rows(vertices_zyx: np.ndarray) -> np.ndarray:
    """``(V, 3)`` (z, y, x) vertices as (x, y, z)."""
    return np.stack([point_from_display(v) for v in np.asarray(vertices_zyx)])


def _same_rectangle(a: np.ndarray, b: np.ndarray) -> bool:
    return np.allclose(a[:, :2].min(0), b[:, :2].min(0)) and np.allclose(a[:, :2].max(0), b[:, :2].max(0))


def annotator_for(boxes: Any) -> BoxAnnotator | None:
    return _ANNOTATORS.get(boxes)


def current_slice(viewer: Any, layer: Any) -> int:
    """The z slice (in ``layer``'s voxels) the viewer shows."""
    return int(round(float(layer.world_to_data(viewer.dims.point)[-3])))


def start_annotation(viewer: Any, image: Any) -> BoxAnnotator:
    """Boxes and mask layers for an image layer that has none yet (or its existing ones), linked and bound."""
    item_id = new_item_id(image)
    weak_meta_image = image.metadata.setdefault(META, {"role": "image", "id": item_id})
    weak_meta_image.setdefault("id", item_id)
    weak_meta_image.setdefault("role", "image")
    found = item_layers(viewer.layers, item_id)
    shape = tuple(int(s) for s in from_display(np.asarray(image.data)).shape)
    spacing = layer_spacing(image)
    if "mask" not in found:
        data, kwargs, _ = labels_layer(np.zeros(shape, dtype=np.uint16), spacing, item_id, "mask")
        found["mask"] = viewer.add_labels(data, **kwargs)
    if "boxes" not in found:
        data, kwargs, _ = boxes_layer(WeakBoxes(), shape, spacing, item_id)
        found["boxes"] = viewer.add_shapes(data, **kwargs)
    return bind(viewer, found["boxes"], found["mask"])


def bind(viewer: Any, boxes: Any, mask: Any | None) -> BoxAnnotator:
    """The annotator of a boxes layer (made once) and its keys: Shift-Z (z end), Shift-F (fit), Shift-M (paint)."""
    annotator = _ANNOTATORS.get(boxes)
    if annotator is not None:
        return annotator
    annotator = BoxAnnotator(boxes, mask)
    _ANNOTATORS[boxes] = annotator

    def z_end_here(layer: Any) -> None:
        annotator.set_z_end(current_slice(viewer, boxes))

    def fit(layer: Any) -> None:
        annotator.fit_to_mask()

    def paint_selected(layer: Any) -> None:
        chosen, paint = annotator.selected_boxes(), annotator.mask_layer
        if paint is not None and chosen:
            paint.selected_label = chosen[0] + 1
            paint.mode = "paint"
            viewer.layers.selection.active = paint

    boxes.bind_key("Shift-Z", z_end_here, overwrite=True)
    boxes.bind_key("Shift-F", fit, overwrite=True)
    boxes.bind_key("Shift-M", paint_selected, overwrite=True)
    if mask is not None:
        mask.bind_key("Shift-F", fit, overwrite=True)
    return annotator


def attach(viewer: Any) -> None:
    """Give every boxes layer of ``viewer`` with a known item (now, and as layers are added) its annotator."""

    def link(layer: Any) -> None:
        meta = weak_meta(layer)
        found = item_layers(viewer.layers, meta.get("id"))
        if meta.get("role") == "boxes" and meta.get("editable", True):
            bind(viewer, layer, found.get("mask"))
        elif meta.get("role") == "mask" and "boxes" in found:
            annotator = _ANNOTATORS.get(found["boxes"])
            if annotator is not None and annotator.mask_layer is None:
                annotator.link_mask(layer)

    for layer in list(viewer.layers):
        link(layer)
    if viewer not in _ATTACHED:
        viewer.layers.events.inserted.connect(lambda event: link(event.value))
        _ATTACHED.add(viewer)


__all__ = ["BoxAnnotator", "annotator_for", "attach", "bind", "current_slice", "start_annotation"]
