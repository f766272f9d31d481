"""The napari plugin without Qt: box rules, the reader, the annotator on ``ViewerModel``, Save as weak dataset (round
trip, validator messages), segmenting, and the whole chain reader -> annotate -> save -> validate -> segment."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.components import ViewerModel  # noqa: E402
from napari.utils._test_utils import read_only_mouse_event  # noqa: E402
from napari.utils.interactions import (  # noqa: E402
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)
from napari.utils.notifications import notification_manager  # noqa: E402

from weakseg_monai.data.datalist import read_datalist, write_datalist  # noqa: E402
from weakseg_monai.data.io import read_volume, write_volume  # noqa: E402
from weakseg_monai.data.synthetic import write_synthetic_dataset  # noqa: E402
from weakseg_monai.data.validate import validate_dataset  # noqa: E402
from weakseg_monai.napari import annotate, axes  # noqa: E402
from weakseg_monai.napari.boxes import (  # noqa: E402
    WeakBoxes,
    box_from_rectangle,
    grow_to_mask,
    rectangle_of,
    remove_boxes,
    with_z_end_at,
)
from weakseg_monai.napari.layers import weak_meta  # noqa: E402
from weakseg_monai.napari.reader import get_reader  # noqa: E402
from weakseg_monai.napari.save import notify_report, save_weak_dataset  # noqa: E402
from weakseg_monai.napari.segment import image_input, prediction_layers, segment_volume  # noqa: E402

from .napari_support import SAMPLE, add_layers, annotate_stack, bundle_inference_labels, write_stack  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[1] / "weakseg_monai" / "napari" / "napari.yaml"


def open_in(viewer: ViewerModel, path: Path) -> list:
    reader = get_reader(str(path))
    assert reader is not None, f"the plugin does not read {path}"
    return add_layers(viewer, reader(str(path)))


def test_the_manifest_is_valid_and_names_importable_commands():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()
    assert {c.id for c in manifest.contributions.commands} == {
        "weakseg-monai.get_reader", "weakseg-monai.annotate", "weakseg-monai.segment", "weakseg-monai.train",
        "weakseg-monai.rank",
    }


def test_axes_transpose_once_and_scale_is_the_spacing_reversed():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    shown = axes.to_display(volume)
    assert shown.shape == (4, 3, 2) and shown[3, 2, 1] == volume[1, 2, 3]
    assert np.shares_memory(shown, volume), "a view: painting the layer paints our array"
    np.testing.assert_array_equal(axes.from_display(shown), volume)
    assert axes.scale_from_spacing((0.5, 0.25, 2.0)) == (2.0, 0.25, 0.5)
    assert axes.spacing_from_scale((2.0, 0.25, 0.5)) == (0.5, 0.25, 2.0)


def test_a_drawn_rectangle_and_two_z_presses_give_the_exact_box():
    shape, spacing = (40, 30, 20), (0.5, 0.5, 1.0)
    # a rectangle drawn on slice 7 over voxels x 10..19, y 5..11 (napari edges sit half a voxel off the centres)
    drawn = rectangle_of([10, 5, 7, 20, 12, 8], 7)
    box = box_from_rectangle(drawn, shape, spacing, np.zeros((0, 6)))
    np.testing.assert_array_equal(box[[0, 1, 3, 4]], [10, 5, 20, 12])
    assert box[2] <= 7 < box[5] and box[5] - box[2] == 4, "as deep as wide in µm: 8.5 voxels x 0.5 / 1.0 ~ 4"
    box = with_z_end_at(box, 3, shape)  # first slice of the nucleus
    box = with_z_end_at(box, 12, shape)  # last slice
    np.testing.assert_array_equal(box, [10, 5, 3, 20, 12, 13])
    assert with_z_end_at(box, 10, shape)[5] == 11, "a press inside the box shrinks its nearer end"


def test_painting_grows_boxes_sets_flags_and_new_values_become_boxes():
    mask = np.zeros((20, 20, 10), dtype=np.uint16)
    weak = WeakBoxes([[2, 2, 2, 6, 6, 5]], [0], [False])
    mask[3:5, 3:5, 3] = 1
    mask[7, 3, 3] = 1  # outside box 0: the box grows
    mask[10:12, 10:13, 6:8] = 9  # a fresh value: a new box, renumbered to 2
    grown = grow_to_mask(weak, mask)
    np.testing.assert_array_equal(grown.boxes, [[2, 2, 2, 8, 6, 5], [10, 10, 6, 12, 13, 8]])
    assert grown.mask_annotated.tolist() == [True, True] and int(mask.max()) == 2
    cleared = remove_boxes(grown, [0], mask)
    assert len(cleared) == 1 and set(np.unique(mask)) == {0, 1}, "box 1 is now box 0: its voxels now value 1"
    np.testing.assert_array_equal(np.argwhere(mask == 1).min(0), [10, 10, 6])


def _drag(layer, start, end) -> None:
    """A mouse drag in ``layer`` from ``start`` to ``end`` (world (z, y, x) coordinates) in five moves, as napari's
    own tests send mouse events."""
    mouse_press_callbacks(layer, read_only_mouse_event(type="mouse_press", position=start))
    for t in np.linspace(0.2, 1.0, 5):
        position = tuple((1 - t) * np.asarray(start) + t * np.asarray(end))
        mouse_move_callbacks(layer, read_only_mouse_event(type="mouse_move", is_dragging=True, position=position))
    mouse_release_callbacks(layer, read_only_mouse_event(type="mouse_release", position=end))


def test_gestures_on_a_viewer_model_draw_extend_edit_and_delete_boxes():
    viewer = ViewerModel()
    image = viewer.add_image(axes.to_display(np.zeros((40, 30, 20), np.float32)), name="img", scale=(1, 1, 1))
    annotator = annotate.start_annotation(viewer, image)
    boxes = annotator.layer
    viewer.dims.set_point(0, 7)
    boxes.mode = "add_rectangle"
    _drag(boxes, (7, 4.5, 9.5), (7, 11.5, 19.5))  # gesture 1: voxels x 10..19, y 5..11 on slice 7
    assert len(annotator.weak) == 1
    np.testing.assert_array_equal(annotator.weak.boxes[0][[0, 1, 3, 4]], [10, 5, 20, 12])
    for z in (3, 12):  # gestures 2 and 3
        viewer.dims.set_point(0, z)
        annotator.set_z_end(annotate.current_slice(viewer, boxes))
    np.testing.assert_array_equal(annotator.weak.boxes[0], [10, 5, 3, 20, 12, 13])
    assert len(boxes.data) == 10, "one rectangle per slice of the box"
    # editing: move one of its rectangles on slice 5 by 2 voxels in x: the box moves on every slice
    shape_on_5 = int(np.flatnonzero([np.isclose(v[0, 0], 5) for v in boxes.data])[0])
    boxes.mode = "select"
    viewer.dims.set_point(0, 5)
    assert boxes.get_value((5, 8, 15), world=True)[0] == shape_on_5
    _drag(boxes, (5, 8, 15), (5, 8, 17))  # press on it (selects it), drag 2 voxels along x
    np.testing.assert_array_equal(annotator.weak.boxes[0], [12, 5, 3, 22, 12, 13])
    assert all(np.isclose(v[:, 2].min(), 11.5) for v in boxes.data)
    # delete its rectangle on one slice: the box is gone
    boxes.remove([0])
    assert len(annotator.weak) == 0 and len(boxes.data) == 0


def test_painting_in_the_mask_layer_grows_the_box_and_flags_it():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((20, 30, 40), np.float32), name="img")
    annotator = annotate.start_annotation(viewer, image)
    annotator.add_box([10, 5, 3, 20, 12, 13])
    mask_layer = annotator.mask_layer
    mask_layer.brush_size = 1
    mask_layer.paint((8, 6, 25), 1)  # (z, y, x): x = 25 is outside the box
    np.testing.assert_array_equal(annotator.weak.boxes[0], [10, 5, 3, 26, 12, 13])
    assert annotator.weak.mask_annotated.tolist() == [True]
    assert mask_layer.data[8, 6, 25] == 1 and axes.from_display(mask_layer.data)[25, 6, 8] == 1


def _datalist_fields(folder: Path) -> dict:
    data = read_datalist(folder)
    return {
        item["id"]: (section, item["box"], item["label"], item["mask_annotated"], item["spacing"])
        for section, items in data.items() for item in items
    }


def _arrays(folder: Path) -> dict:
    data = read_datalist(folder)
    return {
        (item["id"], key): read_volume(folder / item[key])
        for items in data.values() for item in items for key in ("image", "mask", "gt_instances") if item.get(key)
    }


def test_save_round_trip_elsewhere_and_in_place_keeps_everything(tmp_path):
    source = tmp_path / "source"
    write_synthetic_dataset(source, n_train=2, n_val=1, n_test=0, shape=(48, 48, 12), n_cells=(3, 5), seed=2,
                            mask_fraction=0.5)
    viewer = ViewerModel()
    open_in(viewer, source)
    first, report = save_weak_dataset(viewer.layers, tmp_path / "copy")
    assert report.ok, report.format()
    again = ViewerModel()
    open_in(again, tmp_path / "copy")
    _, report = save_weak_dataset(again.layers, tmp_path / "copy")  # in place, the opened dataset
    assert report.ok, report.format()
    assert _datalist_fields(tmp_path / "copy") == _datalist_fields(source)
    assert any(any(flags) for _, _, _, flags, _ in _datalist_fields(source).values()), "some masks to carry"
    original, copied = _arrays(source), _arrays(tmp_path / "copy")
    assert original.keys() == copied.keys()
    for key in original:
        np.testing.assert_array_equal(copied[key], original[key], err_msg=str(key))
    assert not list((tmp_path / "copy").rglob(".tmp_*")), "no temporary file left"


def test_validator_messages_reach_the_viewer_as_notifications(tmp_path):
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((8, 16, 16), np.float32), name="cells", scale=(1.0, 0.5, 0.5))
    annotator = annotate.start_annotation(viewer, image)
    annotator.add_box([2, 2, 2, 6, 6, 5])
    weak_meta(annotator.layer)["boxes"].mask_annotated[0] = True  # flagged, yet nothing painted
    _, report = save_weak_dataset(viewer.layers, tmp_path)
    notification_manager.records.clear()
    notify_report(report, tmp_path)
    messages = [str(n.message) for n in notification_manager.records]
    assert any("mask_annotated has true flags but no mask" in m and m.startswith("ERROR") for m in messages), messages
    assert re.search(r"1 items, 1 errors", messages[-1])


def test_the_reader_opens_volumes_predictions_and_boxes_with_their_spacing(tmp_path):
    volume = np.arange(6 * 5 * 4, dtype=np.uint16).reshape(6, 5, 4)
    write_volume(tmp_path / "cells.tif", volume, (0.25, 0.5, 2.0))
    write_volume(tmp_path / "cells_instances.tif", (volume % 3).astype(np.uint16), (0.25, 0.5, 2.0))
    (tmp_path / "cells_boxes.json").write_text(json.dumps({
        "image": str(tmp_path / "cells.tif"), "spacing": [0.25, 0.5, 2.0], "boxes": [[0, 1, 0, 3, 4, 2]],
        "scores": [0.9], "labels": [0], "instance_values": [1],
    }))
    viewer = ViewerModel()
    image, instances, boxes = (open_in(viewer, tmp_path / name)[0]
                               for name in ("cells.tif", "cells_instances.tif", "cells_boxes.json"))
    assert type(image).__name__ == "Image" and type(instances).__name__ == "Labels"
    np.testing.assert_array_equal(axes.from_display(image.data), volume)
    for layer in (image, instances, boxes):
        np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.25))
    np.testing.assert_array_equal(weak_meta(boxes)["boxes"].boxes, [[0, 1, 0, 3, 4, 2]])
    assert len(boxes.data) == 2, "the box covers slices 0 and 1"
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_the_reader_opens_ome_zarr_images_and_predictions_as_lazy_multiscale_layers(tmp_path):
    """An OME-Zarr image and our ``NAME_instances.ome.zarr``: multiscale layers whose data stay dask arrays (a volume
    larger than memory opens), full resolution equal to the volume, scale the spacing reversed."""
    pytest.importorskip("ome_zarr", reason="the [scale] extra")
    from weakseg_monai.data.omezarr import write_zarr_labels

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, (160, 140, 6)).astype(np.uint16)  # 160 x 140 in-plane: two levels
    write_volume(tmp_path / "big.ome.zarr", volume, (0.25, 0.5, 2.0))
    write_zarr_labels(tmp_path / "big_instances.ome.zarr", (volume % 4).astype(np.int32), (0.25, 0.5, 2.0))
    viewer = ViewerModel()
    (image,), (labels,) = (open_in(viewer, tmp_path / n) for n in ("big.ome.zarr", "big_instances.ome.zarr"))
    assert type(image).__name__ == "Image" and type(labels).__name__ == "Labels"
    assert image.multiscale and labels.multiscale and len(image.data) == len(labels.data) == 2
    assert type(image.data[0]).__module__.startswith("dask"), "read lazily, not loaded"
    np.testing.assert_array_equal(axes.from_display(np.asarray(image.data[0])), volume)
    np.testing.assert_array_equal(axes.from_display(np.asarray(labels.data[0])), volume % 4)
    for layer in (image, labels):
        np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.25))
    assert labels.name == "big instances"


def test_segmenting_the_shipped_sample_equals_the_bundle_inference():
    viewer = ViewerModel()
    (image,) = open_in(viewer, SAMPLE)
    volume, spacing, name = image_input(image)
    labels, boxes = add_layers(viewer, prediction_layers(segment_volume(volume, spacing), spacing, name))
    assert labels.data.max() > 0
    np.testing.assert_array_equal(axes.from_display(labels.data), bundle_inference_labels())
    assert len(weak_meta(boxes)["boxes"]) == int(labels.data.max())


def test_chain_reader_annotate_save_validate_segment(tmp_path):
    """An image opened, two boxes drawn (programmatically), one mask painted, saved as a weak dataset that our
    validator accepts, reopened, and segmented with the shipped checkpoint."""
    volume = write_stack(tmp_path / "stack.nii.gz")
    viewer = ViewerModel()
    (image,) = open_in(viewer, tmp_path / "stack.nii.gz")
    annotator = annotate_stack(viewer, image)
    assert annotator.weak.mask_annotated.tolist() == [True, False]
    folder = tmp_path / "annotated"
    _, report = save_weak_dataset(viewer.layers, folder)
    assert report.ok and not report.errors, report.format()
    assert validate_dataset(folder).ok
    (item,) = read_datalist(folder)["training"]
    assert item["id"] == "stack" and item["mask_annotated"] == [True, False] and item["spacing"] == [0.5, 0.5, 1.0]
    reopened = ViewerModel()
    layers = open_in(reopened, folder)
    assert [weak_meta(layer)["role"] for layer in layers] == ["image", "mask", "boxes"]
    volume_back, spacing, name = image_input(layers[0])
    np.testing.assert_array_equal(volume_back, volume)
    labels, _ = add_layers(reopened, prediction_layers(segment_volume(volume_back, spacing), spacing, name))
    assert labels.data.shape == layers[0].data.shape and labels.data.max() >= 1


def test_a_dataset_folder_is_read_in_its_datalist_order_with_masks_and_ground_truth(tiny_dataset):
    data = read_datalist(tiny_dataset)
    data["validation"] = [dict(data["training"][0], id="b")]
    write_datalist(tiny_dataset, data)
    viewer = ViewerModel()
    layers = open_in(viewer, tiny_dataset / "datalist.json")
    roles = [(weak_meta(layer)["id"], weak_meta(layer)["role"]) for layer in layers]
    assert roles == [("a", "image"), ("a", "gt_instances"), ("a", "mask"), ("a", "boxes"),
                     ("b", "image"), ("b", "gt_instances"), ("b", "mask"), ("b", "boxes")]
    assert [layer.visible for layer in layers if weak_meta(layer)["id"] == "b"] == [False] * 4
    annotate.attach(viewer)
    assert annotate.annotator_for(layers[3]).mask_layer is layers[2]


def test_ranking_marks_the_boxes_without_a_mask_the_model_is_least_sure_of(tmp_path):
    """Two nuclei boxed (the first painted) and a box drawn around empty background: the shipped model's flips find
    nothing there, so that box is marked first; the painted box is never ranked; painting the marked box's mask
    turns its mark into the annotated colour, and removing a box drops the marks (indices change)."""
    from napari.utils.colormaps.standardize_color import transform_color

    from weakseg_monai.napari.layers import ANNOTATED_COLOUR, NEXT_COLOUR
    from weakseg_monai.napari.rank import STEPS, mark_next, rank_steps

    write_stack(tmp_path / "stack.nii.gz")
    viewer = ViewerModel()
    (image,) = open_in(viewer, tmp_path / "stack.nii.gz")
    annotator = annotate_stack(viewer, image)
    annotator.add_box([40, 2, 1, 46, 8, 4])
    volume, spacing, _ = image_input(image)
    steps = list(rank_steps(volume, spacing, annotator.weak))
    *progress, ranking = steps
    assert progress == list(range(len(STEPS) - 1))
    assert 0 not in ranking.order.tolist() and ranking.order[0] == 2 and ranking.scores[2] == 1.0
    assert mark_next(annotator.layer, ranking, 1) == [2]
    owners = annotator.layer.features["box_index"].to_numpy()

    def colour_of(box: int) -> np.ndarray:
        return annotator.layer.edge_color[np.nonzero(owners == box)[0][0]]

    np.testing.assert_allclose(colour_of(2), transform_color(NEXT_COLOUR)[0])
    assert not np.allclose(colour_of(1), transform_color(NEXT_COLOUR)[0])
    annotator.mask_layer.brush_size = 2
    annotator.mask_layer.paint((2, 5, 43), 3)
    owners = annotator.layer.features["box_index"].to_numpy()
    assert annotator.weak.mask_annotated.tolist() == [True, False, True]
    np.testing.assert_allclose(colour_of(2), transform_color(ANNOTATED_COLOUR)[0])
    annotator.remove([1])
    assert "next_to_annotate" not in weak_meta(annotator.layer)
