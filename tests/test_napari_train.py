"""The napari plugin's Train: the bundle's train workflow on a dataset the plugin's Save wrote, with progress, loss and
a clean stop (no Qt), and the Train widget on a real viewer (Qt, the skip rules of ``test_napari_widgets.py``)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.components import ViewerModel  # noqa: E402

from weakseg_monai.engines.handlers import FINAL_MODEL_FILE  # noqa: E402
from weakseg_monai.families import load_model  # noqa: E402
from weakseg_monai.napari.reader import get_reader  # noqa: E402
from weakseg_monai.napari.save import save_weak_dataset  # noqa: E402
from weakseg_monai.napari.segment import model_path, segment_volume  # noqa: E402
from weakseg_monai.napari.train import TrainProgress, TrainResult, train_dataset, train_steps  # noqa: E402
from weakseg_monai.utils.errors import root_cause  # noqa: E402

from .napari_support import add_layers, annotate_stack, why_no_qt, write_stack  # noqa: E402

SPACING = (0.5, 0.5, 1.0)


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    """One stack opened with the plugin's reader, two boxes and one mask annotated, written by Save."""
    root = tmp_path_factory.mktemp("napari_train")
    volume = write_stack(root / "stack.nii.gz")
    viewer = ViewerModel()
    (image,) = add_layers(viewer, get_reader(str(root / "stack.nii.gz"))(str(root / "stack.nii.gz")))
    annotate_stack(viewer, image)
    _, report = save_weak_dataset(viewer.layers, root / "annotated")
    assert report.ok, report.format()
    return root / "annotated", volume


def _segments(model, volume: np.ndarray) -> None:
    prediction = segment_volume(volume, SPACING, model)
    assert prediction["instances"].shape == volume.shape
    assert len(prediction["boxes"]) == int(prediction["instances"].max())


def test_training_reports_each_iteration_and_leaves_a_model_that_segments(saved_dataset, tmp_path):
    dataset, volume = saved_dataset
    *seen, result = train_steps(dataset, tmp_path / "run", iterations=3)  # what the widget's worker runs
    assert all(isinstance(p, TrainProgress) for p in seen) and isinstance(result, TrainResult)
    assert [p.iteration for p in seen] == [1, 2, 3] and {p.total for p in seen} == {3}
    assert all(math.isfinite(p.loss) and p.loss > 0 for p in seen), [p.losses for p in seen]
    assert {"loss_cls", "loss_box_reg"} <= set(seen[0].losses), "the trainer's loss terms come along"
    assert not result.stopped and result.iterations == 3
    assert result.model == tmp_path / "run" / "models" / "model.pt" == model_path(tmp_path / "run"), (
        "the output folder is a bundle folder for Segment")
    assert (tmp_path / "run" / "runs" / "train" / "plan.json").is_file(), "the bundle's own workflow ran"
    load_model(result.model)
    _segments(result.model, volume)


def test_a_stop_after_the_first_iteration_ends_the_run_with_a_loadable_model(saved_dataset, tmp_path):
    dataset, volume = saved_dataset
    stop = threading.Event()
    seen: list[TrainProgress] = []

    def report(progress: TrainProgress) -> None:
        seen.append(progress)
        stop.set()  # the Stop button, pressed during the first iteration

    result = train_dataset(dataset, tmp_path / "run", iterations=50, on_progress=report, stop=stop)
    assert [p.iteration for p in seen] == [1] and result.stopped and (result.iterations, result.total) == (1, 50)
    assert (tmp_path / "run" / "models" / FINAL_MODEL_FILE).is_file(), "ModelSaver wrote on COMPLETED after TERMINATE"
    load_model(result.model)
    _segments(result.model, volume)


def test_a_failing_run_raises_its_error_from_the_generator(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception) as caught:
        list(train_steps(tmp_path / "empty", tmp_path / "run", iterations=2))
    assert "datalist" in str(root_cause(caught.value)), "the widget shows the real message below MONAI's wrapper"


WHY_NO_QT = why_no_qt()


@pytest.mark.skipif(WHY_NO_QT is not None, reason=str(WHY_NO_QT))
def test_train_widget_trains_in_a_worker_and_hands_the_model_to_segment(saved_dataset, make_napari_viewer, qtbot,
                                                                         tmp_path):
    from weakseg_monai.napari.widgets import SegmentWidget, TrainWidget

    dataset, _ = saved_dataset
    viewer = make_napari_viewer()
    add_layers(viewer, get_reader(str(dataset))(str(dataset)))
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    assert str(widget.dataset.value) == str(dataset), "the opened dataset is the default"
    widget.output.value = tmp_path / "run"
    widget.iterations.value = 50
    widget.train()
    assert not widget.run.enabled and widget.stop.enabled
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=120_000)
    assert widget.progress.max == 50 and widget.status.value.startswith("iteration ")
    widget.request_stop()
    qtbot.waitUntil(lambda: widget.run.enabled, timeout=120_000)
    assert widget.result is not None and widget.result.stopped, widget.status.value
    assert widget.result.iterations < 50 and widget.status.value.startswith("stopped at iteration")
    assert segment.model.value == tmp_path / "run" / "models" / "model.pt", "the trained model is offered to Segment"
