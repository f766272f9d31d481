"""The napari plugin's Qt widgets on a real viewer (pytest-qt's ``make_napari_viewer``, under pytest-xvfb's virtual
display). Without a display server they skip with the reason, unless ``WEAKSEG_REQUIRE_DISPLAY=1`` (CI), under which
a missing display fails."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from weakseg_monai.data.datalist import read_datalist  # noqa: E402
from weakseg_monai.napari import axes  # noqa: E402
from weakseg_monai.napari.layers import weak_meta  # noqa: E402
from weakseg_monai.napari.reader import get_reader  # noqa: E402

from .napari_support import SAMPLE, add_layers, bundle_inference_labels, why_no_qt  # noqa: E402

WHY_NO_QT = why_no_qt()
pytestmark = pytest.mark.skipif(WHY_NO_QT is not None, reason=str(WHY_NO_QT))


def test_segment_widget_runs_in_a_worker_and_matches_the_bundle_inference(make_napari_viewer, qtbot):
    from weakseg_monai.napari.widgets import SegmentWidget

    viewer = make_napari_viewer()
    add_layers(viewer, get_reader(str(SAMPLE))(str(SAMPLE)))
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is viewer.layers["sample_000"]
    widget.segment()
    qtbot.waitUntil(lambda: "sample_000 instances" in [layer.name for layer in viewer.layers], timeout=120_000)
    qtbot.waitUntil(lambda: widget.run.enabled, timeout=10_000)
    labels = viewer.layers["sample_000 instances"]
    assert widget.progress.value == 2 and labels.data.max() > 0
    np.testing.assert_array_equal(axes.from_display(labels.data), bundle_inference_labels())
    np.testing.assert_allclose(labels.scale, viewer.layers["sample_000"].scale)
    assert len(weak_meta(viewer.layers["sample_000 predicted boxes"])["boxes"]) == int(labels.data.max())


def test_annotate_widget_starts_annotation_and_saves_a_valid_dataset(make_napari_viewer, tmp_path):
    from napari.utils.notifications import notification_manager

    from weakseg_monai.napari.annotate import annotator_for
    from weakseg_monai.napari.widgets import AnnotateWidget

    viewer = make_napari_viewer()
    add_layers(viewer, get_reader(str(SAMPLE))(str(SAMPLE)))
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.start_annotation()
    boxes = viewer.layers["sample_000 boxes"]
    assert viewer.layers.selection.active is boxes and boxes.mode == "add_rectangle"
    annotator = annotator_for(boxes)
    annotator.add_box([10, 10, 5, 20, 20, 12])
    viewer.dims.set_point(0, 14)
    widget.z_end_here()
    np.testing.assert_array_equal(annotator.weak.boxes[0], [10, 10, 5, 20, 20, 15])
    widget.folder.value = tmp_path
    notification_manager.records.clear()
    widget.save_dataset()
    (item,) = read_datalist(tmp_path)["training"]
    assert item["box"] == [[10, 10, 5, 20, 20, 15]] and item["mask_annotated"] == [False]
    messages = [str(n.message) for n in notification_manager.records]
    assert any(m.startswith(f"saved {tmp_path}: 1 items, 0 errors") for m in messages), messages


def test_rank_widget_marks_the_next_boxes_in_a_worker(make_napari_viewer, qtbot):
    from napari.utils.colormaps.standardize_color import transform_color

    from weakseg_monai.napari import annotate
    from weakseg_monai.napari.layers import NEXT_COLOUR
    from weakseg_monai.napari.widgets import RankWidget

    viewer = make_napari_viewer()
    add_layers(viewer, get_reader(str(SAMPLE))(str(SAMPLE)))
    annotator = annotate.start_annotation(viewer, viewer.layers["sample_000"])
    from weakseg_monai.data.instances import boxes_from_instances

    found = boxes_from_instances(bundle_inference_labels())[0]  # a nucleus the model finds
    for box in (found, [0, 0, 0, 6, 6, 3]):  # the second around empty background
        annotator.add_box(np.asarray(box, dtype=float))
    widget = RankWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.count.value = 1
    widget.rank()
    qtbot.waitUntil(lambda: widget.ranking is not None, timeout=120_000)
    qtbot.waitUntil(lambda: widget.run.enabled, timeout=10_000)
    assert widget.status.value.startswith("next: box 2") and widget.progress.value == widget.progress.max
    owners = annotator.layer.features["box_index"].to_numpy()
    marked = annotator.layer.edge_color[np.nonzero(owners == 1)[0][0]]
    np.testing.assert_allclose(marked, transform_color(NEXT_COLOUR)[0])
