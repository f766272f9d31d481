"""The dock widgets (magicgui on Qt), thin over the Qt-free modules: ``AnnotateWidget`` (start annotating an image,
the z-end and fit keys as buttons, Save as weak dataset), ``SegmentWidget`` (the predictor in a worker thread),
``TrainWidget`` (the bundle's train workflow in a worker thread, with Stop) and ``RankWidget`` (what to annotate
next: the boxes without a mask ranked by the model's uncertainty, the top ones marked)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox
from napari.layers import Image, Layer
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from weakseg_monai.napari import annotate
from weakseg_monai.napari.layers import item_layers, weak_meta
from weakseg_monai.napari.rank import STEPS as RANK_STEPS
from weakseg_monai.napari.rank import Ranking, mark_next, rank_steps
from weakseg_monai.napari.save import notify_report, save_weak_dataset
from weakseg_monai.napari.segment import SHIPPED_MODEL, STEPS, image_input, prediction_layers, segment_steps
from weakseg_monai.napari.train import TRAIN_CONFIG, TrainProgress, TrainResult, train_steps
from weakseg_monai.utils.errors import root_cause

if TYPE_CHECKING:
    import napari

GESTURES = (
    "<b>One box in three gestures</b> (boxes layer selected):<br>"
    "1. draw a rectangle (R) on a slice through the nucleus;<br>"
    "2. Shift-Z on its first slice, 3. Shift-Z on its last slice.<br>"
    "Move / resize a rectangle (S) to edit its box; Delete removes it.<br>"
    "Shift-M: paint the selected box's mask; Shift-F: fit the box to it."
)


def _image_layers(viewer: Any) -> list[tuple[str, Layer]]:
    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)]


def _chosen(edit: FileEdit) -> Path | None:
    """A ``FileEdit``'s path, or ``None`` while nothing is chosen (magicgui shows that as ``.``)."""
    return None if str(edit.value) in ("", ".") else Path(str(edit.value))


def _opened_dataset(viewer: Any) -> str | None:
    """The dataset folder the viewer's layers were opened from, if any."""
    opened = [weak_meta(layer)["dataset"] for layer in viewer.layers if weak_meta(layer).get("dataset")]
    return opened[0] if opened else None


def _active_image(viewer: Any) -> Layer | None:
    active = viewer.layers.selection.active
    if isinstance(active, Image):
        return active
    images = _image_layers(viewer)
    return images[0][1] if images else None


class AnnotateWidget(Container):
    """Start annotating an image, the annotation keys as buttons, and Save as weak dataset."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=lambda _: _image_layers(self.viewer))
        self.start = PushButton(text="Annotate this image")
        self.z_end = PushButton(text="Z end here (Shift-Z)")
        self.fit = PushButton(text="Fit boxes to masks (Shift-F)")
        self.folder = FileEdit(label="dataset folder", mode="d")
        self.save = PushButton(text="Save as weak dataset")
        self.extend([Label(value=GESTURES), self.image, self.start, self.z_end, self.fit, self.folder, self.save])
        self.start.changed.connect(self.start_annotation)
        self.z_end.changed.connect(self.z_end_here)
        self.fit.changed.connect(self.fit_boxes)
        self.save.changed.connect(self.save_dataset)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh)
        annotate.attach(self.viewer)
        self.refresh()

    def refresh(self, event: Any = None) -> None:
        """New image choices; the folder defaults to the opened dataset's."""
        self.image.reset_choices()
        opened = _opened_dataset(self.viewer)
        if _chosen(self.folder) is None and opened:
            self.folder.value = opened

    def _annotator(self) -> annotate.BoxAnnotator | None:
        image = self.image.value or _active_image(self.viewer)
        return None if image is None else annotate.start_annotation(self.viewer, image)

    def start_annotation(self) -> None:
        annotator = self._annotator()
        if annotator is not None:
            self.viewer.layers.selection.active = annotator.layer
            annotator.layer.mode = "add_rectangle"

    def z_end_here(self) -> None:
        annotator = self._annotator()
        if annotator is not None:
            annotator.set_z_end(annotate.current_slice(self.viewer, annotator.layer))

    def fit_boxes(self) -> None:
        annotator = self._annotator()
        if annotator is not None:
            annotator.fit_to_mask()

    def save_dataset(self) -> None:
        folder = _chosen(self.folder)
        if folder is None:
            show_error("choose a dataset folder to save into")
            return
        try:
            _, report = save_weak_dataset(self.viewer.layers, folder)
        except (OSError, ValueError) as err:
            show_error(f"not saved: {err}")
            return
        notify_report(report, folder)


class ModelOnImageWidget(Container):
    """The parts of the widgets that run a model on an image layer: the image (following the layer list) and the
    model (the shipped one by default), any ``extra`` widgets, a run button, a progress bar over ``steps`` and a
    status line."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, run_text: str, steps: Sequence[str],
                 extra: Sequence[Any] = ()) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=lambda _: _image_layers(self.viewer))
        self.model = FileEdit(label="model.pt or bundle", mode="r", filter="*.pt")
        if SHIPPED_MODEL.is_file():
            self.model.value = SHIPPED_MODEL
        self.run = PushButton(text=run_text)
        self.progress = ProgressBar(label="progress", min=0, max=len(steps) - 1, value=0)
        self.status = Label(value="")
        self.extend([self.image, self.model, *extra, self.run, self.progress, self.status])
        self.worker: Any = None
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(lambda _=None: self.image.reset_choices())
        active = _active_image(self.viewer)
        if active is not None:
            self.image.value = active


class SegmentWidget(ModelOnImageWidget):
    """Run a model on an image layer in a worker thread; adds the instances (Labels) and their boxes."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer, "Segment", STEPS)
        self.run.changed.connect(self.segment)

    def segment(self) -> None:
        """Start the worker on the chosen image layer (spacing from its ``scale``)."""
        layer = self.image.value or _active_image(self.viewer)
        if layer is None:
            show_error("open an image first")
            return
        volume, spacing, item_id = image_input(layer)
        self.run.enabled = False
        self.worker = thread_worker(segment_steps)(volume, spacing, _chosen(self.model))
        self.worker.yielded.connect(lambda value: self._on_step(value, spacing, item_id))
        self.worker.errored.connect(lambda err: show_error(f"segmentation failed: {err}"))
        self.worker.finished.connect(lambda: setattr(self.run, "enabled", True))
        self.worker.start()

    def _on_step(self, value: Any, spacing: tuple[float, float, float], item_id: str) -> None:
        if isinstance(value, int):
            self.progress.value = value
            self.status.value = STEPS[value]
            return
        for data, kwargs, kind in prediction_layers(value, spacing, item_id):
            self.viewer.add_layer(Layer.create(data, kwargs, kind))
        show_info(f"{item_id}: {len(value['boxes'])} instances")


class TrainWidget(Container):
    """Train on a saved weak dataset through the bundle's ``train.json`` in a worker thread, showing iteration / total
    and the loss; Stop ends the run after the current iteration with a usable ``model.pt``, which then becomes the
    model of the viewer's Segment widgets. Needs the source checkout (``bundle/configs/train.json``)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.dataset = FileEdit(label="dataset folder", mode="d")
        self.output = FileEdit(label="output folder", mode="d")
        self.iterations = SpinBox(label="iterations", min=0, max=1_000_000, step=10, value=0,
                                  tooltip="0: the planner's schedule (1200-2000); a few for a quick look")
        self.run = PushButton(text="Train")
        self.stop = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="" if TRAIN_CONFIG.is_file() else f"needs the source checkout: no {TRAIN_CONFIG}")
        self.extend([self.dataset, self.output, self.iterations, self.run, self.stop, self.progress, self.status])
        self.worker: Any = None
        self.stop_event = threading.Event()
        self.result: TrainResult | None = None
        self.run.changed.connect(self.train)
        self.stop.changed.connect(self.request_stop)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, event: Any = None) -> None:
        """The dataset folder defaults to the opened dataset's."""
        opened = _opened_dataset(self.viewer)
        if _chosen(self.dataset) is None and opened:
            self.dataset.value = opened

    def train(self) -> None:
        """Start the bundle's train workflow on the chosen folders in a worker thread."""
        dataset, output = _chosen(self.dataset), _chosen(self.output)
        if dataset is None or not (dataset / "datalist.json").is_file():
            show_error("choose a dataset folder with a datalist.json (Save as weak dataset writes one)")
            return
        if output is None:
            show_error("choose an output folder for the model")
            return
        self.stop_event = threading.Event()
        self.result = None
        self.progress.value = 0
        self.status.value = "starting (planning, loading the data)"
        self.run.enabled, self.stop.enabled = False, True
        self.worker = thread_worker(train_steps)(dataset, output, int(self.iterations.value) or None, self.stop_event)
        self.worker.yielded.connect(self._on_step)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def request_stop(self) -> None:
        """Stop after the current iteration (the model files are still written)."""
        self.stop_event.set()
        self.stop.enabled = False
        self.status.value = "stopping after this iteration"

    def _on_step(self, value: TrainProgress | TrainResult) -> None:
        if isinstance(value, TrainProgress):
            self.progress.max = max(value.total, 1)
            self.progress.value = value.iteration
            self.status.value = value.text()
            return
        self.result = value
        self.status.value = f"{value.summary()}: {value.output_dir.name}/models/model.pt"
        offered = self.offer_model(value.model)
        show_info(value.text() + ("; Segment and What to annotate next now use it" if offered else ""))

    def offer_model(self, model: Path) -> bool:
        """Set the trained ``model.pt`` as the model of the viewer's docked Segment and ranking widgets; True if
        there was one."""
        window = getattr(self.viewer, "window", None)
        docked = list(getattr(window, "dock_widgets", {}).values()) if window is not None else []
        users = [w for w in docked if isinstance(w, (SegmentWidget, RankWidget))]
        for widget in users:
            widget.model.value = model
        return bool(users)

    def _on_error(self, error: BaseException) -> None:
        cause = root_cause(error)
        self.status.value = f"failed: {cause}"
        show_error(f"training failed: {type(cause).__name__}: {cause}")

    def _on_finished(self) -> None:
        self.run.enabled, self.stop.enabled = True, False


class RankWidget(ModelOnImageWidget):
    """What to annotate next: after a training, rank the chosen image's boxes that have no mask by how much a model's
    predictions disagree under flips (``weakseg_monai.inference.uncertainty``), in a worker thread, and mark the top
    ones in its boxes layer (magenta) for the user to paint next."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self.count = SpinBox(label="boxes to mark", min=1, max=1000, value=5)
        super().__init__(napari_viewer, "Rank boxes without a mask", RANK_STEPS, extra=[self.count])
        self.ranking: Ranking | None = None
        self.run.changed.connect(self.rank)

    def boxes_layer(self, layer: Layer) -> Layer | None:
        return item_layers(self.viewer.layers, image_input(layer)[2]).get("boxes")

    def rank(self) -> None:
        """Start the worker on the chosen image and its boxes layer."""
        layer = self.image.value or _active_image(self.viewer)
        boxes = None if layer is None else self.boxes_layer(layer)
        if boxes is None:
            show_error("open an image with its boxes (or start annotating it) first")
            return
        volume, spacing, _ = image_input(layer)
        self.run.enabled = False
        self.worker = thread_worker(rank_steps)(volume, spacing, weak_meta(boxes)["boxes"], _chosen(self.model))
        self.worker.yielded.connect(lambda value: self._on_step(value, boxes))
        self.worker.errored.connect(lambda err: show_error(f"ranking failed: {root_cause(err)}"))
        self.worker.finished.connect(lambda: setattr(self.run, "enabled", True))
        self.worker.start()

    def _on_step(self, value: int | Ranking, boxes: Layer) -> None:
        if isinstance(value, int):
            self.progress.value = value
            self.status.value = RANK_STEPS[value]
            return
        self.ranking = value
        self.progress.value = self.progress.max
        picks = mark_next(boxes, value, int(self.count.value))
        self.status.value = "next: " + value.text(int(self.count.value))
        show_info(f"paint these next (most uncertain first): {value.text(len(picks))}")
