"""Screenshots of the napari plugin's widgets for the README, taken headless by a real napari viewer:

    xvfb-run -a python scripts/napari_screenshots.py   # writes bundle/docs/napari_{annotate,segment,rank,train}.png

(Under ``xvfb-run`` Qt gets a virtual display; ``QT_QPA_PLATFORM=offscreen`` alone fails with an OpenGL error on
Image layers.) It opens the shipped sample (``bundle/sample/sample_000.nii.gz``) with the plugin's reader, then:

- **Weak annotation**: five nuclei of the sample's ground truth (``bundle/sample_gt``) boxed through the annotator
  (as drawn boxes become), one of them with its painted mask;
- **Segment**: the widget run on the sample with the shipped model (its worker thread, as a user runs it);
- **What to annotate next**: the widget ranking the annotated boxes without a mask with the shipped model, the top
  two marked;
- **Train**: the annotated sample saved with Save as weak dataset, the widget training on it through the bundle's
  train workflow, taken mid-run (iteration and loss shown), then stopped with its Stop.

With ``--scale-out IMAGE LABELS`` it takes only ``napari_scale_out.png``: an OME-Zarr stack and its
``NAME_instances.ome.zarr`` (``scripts/benchmark_scale.py`` writes both) opened lazily by the plugin's reader as
multiscale layers, at the middle slice.

Each PNG is the whole window (``viewer.screenshot(canvas_only=False)``), quantised to 256 colours (< 300 KB).
Needs the source checkout with the ``[napari]`` extra (the shipped model and ``train.json`` live in ``bundle/``).
"""

from __future__ import annotations

import sys

# a process that made a napari Qt viewer and imported tensorflow (pulled in by tensorboard where it is installed, the
# peers extra) aborts at exit; nothing here needs it (see tests/napari_support.py)
sys.modules.setdefault("tensorflow", None)  # type: ignore[arg-type]

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "bundle" / "sample" / "sample_000.nii.gz"
SAMPLE_GT = REPO / "bundle" / "sample_gt" / "sample_000_gt.nii.gz"
WINDOW = (1600, 860)
N_BOXES = 5
MAX_BYTES = 300_000


def settle(viewer) -> None:
    """Let the window lay out its docks, then fit the image to the canvas that is left."""
    wait_for(lambda: True)
    viewer.reset_view()
    wait_for(lambda: True)


def wait_for(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    """Run the Qt event loop until ``condition()`` holds (worker results arrive through it)."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s")
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the last repaint land
        QApplication.processEvents()
        time.sleep(0.01)


def save_png(viewer, path: Path) -> int:
    """The whole window as a 256-colour PNG; returns its size in bytes."""
    from PIL import Image
    from qtpy.QtWidgets import QApplication, QWidget

    for window in QApplication.topLevelWidgets():  # toasts that got through (the PyQt5 deprecation, "N instances")
        for child in window.findChildren(QWidget):
            if type(child).__name__ == "NapariQtNotification":
                child.hide()
    wait_for(lambda: True)
    rgba = viewer.screenshot(canvas_only=False, flash=False)
    image = Image.fromarray(np.asarray(rgba)[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    size = path.stat().st_size
    print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {size / 1000:.0f} KB")
    if size > MAX_BYTES:
        print(f"  warning: over {MAX_BYTES / 1000:.0f} KB")
    return size


def chosen_nuclei(gt: np.ndarray, z: int, n: int) -> list[int]:
    """The ``n`` ground-truth instances on slice ``z`` nearest the volume's centre (values, in (x, y) order)."""
    centre = np.asarray(gt.shape[:2]) / 2
    on_slice = [int(v) for v in np.unique(gt[..., z]) if v]
    distance = {v: float(np.linalg.norm(np.argwhere(gt[..., z] == v).mean(0) - centre)) for v in on_slice}
    return sorted(on_slice, key=distance.get)[:n]


def annotate_sample(viewer, image) -> int:
    """Box ``N_BOXES`` nuclei of the sample through the annotator and paint one mask; returns the slice shown."""
    from weakseg_monai.data.instances import boxes_from_instances
    from weakseg_monai.data.io import read_volume
    from weakseg_monai.napari import annotate
    from weakseg_monai.napari.axes import from_display

    gt = read_volume(SAMPLE_GT).astype(np.int64)
    z = gt.shape[2] // 2
    values = chosen_nuclei(gt, z, N_BOXES)
    boxes = boxes_from_instances(gt)
    annotator = annotate.start_annotation(viewer, image)
    for value in values:
        annotator.add_box(boxes[value - 1])
    mask = from_display(annotator.mask_layer.data)  # a view: writing it paints the layer
    mask[gt == values[0]] = 1  # box 0's mask, as Shift-M + the brush would paint it
    annotator.sync_from_mask()
    annotator.mask_layer.refresh()
    viewer.layers.selection.active = annotator.layer
    annotator.layer.selected_data = set()
    return z


def scale_out_shot(viewer, get_reader, image_path: Path, labels_path: Path, out: Path) -> None:
    """A large OME-Zarr stack and its predicted labels, both lazy multiscale layers, at the middle slice, zoomed
    4x into the centre so that single nuclei show."""
    for path in (image_path, labels_path):
        for data, kwargs, kind in get_reader(str(path))(str(path)):
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    image = viewer.layers[0]
    viewer.dims.set_point(0, image.data[0].shape[0] // 2 * image.scale[0])
    settle(viewer)
    viewer.camera.zoom *= 4
    wait_for(lambda: True)
    time.sleep(2)  # the chunks on screen load asynchronously
    wait_for(lambda: True)
    print(out, save_png(viewer, out), "bytes")
    viewer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bundle" / "docs", help="folder for napari_*.png")
    parser.add_argument("--iterations", type=int, default=20, help="the Train widget's run (stopped after 3)")
    parser.add_argument("--scale-out", type=Path, nargs=2, metavar=("IMAGE", "LABELS"),
                        help="only the OME-Zarr shot: a stack and its NAME_instances.ome.zarr")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="weakseg_napari_"))
    os.environ["NAPARI_CONFIG"] = str(work / "napari_settings.yaml")  # napari's settings, not the user's file
    import napari

    from weakseg_monai.napari.reader import get_reader
    from weakseg_monai.napari.save import save_weak_dataset
    from weakseg_monai.napari.widgets import AnnotateWidget, RankWidget, SegmentWidget, TrainWidget

    viewer = napari.Viewer(title="weakseg-monai", show=True)
    viewer.window.resize(*WINDOW)
    if args.scale_out:
        scale_out_shot(viewer, get_reader, *args.scale_out, args.out / "napari_scale_out.png")
        return
    for data, kwargs, kind in get_reader(str(SAMPLE))(str(SAMPLE)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    image = viewer.layers["sample_000"]

    # Weak annotation
    z = annotate_sample(viewer, image)
    viewer.dims.set_point(0, z * image.scale[0])
    annotate_widget = AnnotateWidget(viewer)
    annotate_widget.folder.value = work / "annotated"
    viewer.window.add_dock_widget(annotate_widget, name="Weak annotation")
    settle(viewer)
    save_png(viewer, args.out / "napari_annotate.png")
    _, report = save_weak_dataset(viewer.layers, work / "annotated")  # what its Save button does
    assert report.ok, report.format()
    viewer.window.remove_dock_widget(annotate_widget.native)

    # Segment
    for layer in viewer.layers:
        layer.visible = layer is image
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    settle(viewer)
    segment.segment()
    wait_for(lambda: "sample_000 instances" in [layer.name for layer in viewer.layers] and segment.run.enabled)
    viewer.layers.selection.active = viewer.layers["sample_000 instances"]
    save_png(viewer, args.out / "napari_segment.png")
    viewer.window.remove_dock_widget(segment.native)

    # What to annotate next (the shipped model here; after a Train run, that run's model.pt)
    for layer in viewer.layers:
        layer.visible = layer is image or layer.name in ("sample_000 boxes", "sample_000 mask")
    rank = RankWidget(viewer)
    rank.count.value = 2
    viewer.window.add_dock_widget(rank, name="What to annotate next")
    viewer.layers.selection.active = viewer.layers["sample_000 boxes"]
    settle(viewer)
    rank.rank()
    wait_for(lambda: rank.ranking is not None and rank.run.enabled)
    save_png(viewer, args.out / "napari_rank.png")
    viewer.window.remove_dock_widget(rank.native)

    # Train (the annotated sample, mid-run, then stopped)
    train = TrainWidget(viewer)
    train.dataset.value = work / "annotated"
    train.output.value = work / "model"
    train.iterations.value = args.iterations
    viewer.window.add_dock_widget(train, name="Train")
    viewer.layers.selection.active = viewer.layers["sample_000 boxes"]
    settle(viewer)
    train.train()
    wait_for(lambda: train.progress.value >= 3, timeout=600)
    save_png(viewer, args.out / "napari_train.png")
    train.request_stop()
    wait_for(lambda: train.run.enabled, timeout=600)
    print(train.status.value)
    viewer.close()


if __name__ == "__main__":
    main()
