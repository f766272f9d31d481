"""Helpers of the napari plugin's tests (imported after ``pytest.importorskip("napari")``)."""

from __future__ import annotations

import functools
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from weakseg_monai.data.io import read_volume, write_volume

from .conftest import BUNDLE_DIR

SAMPLE = BUNDLE_DIR / "sample" / "sample_000.nii.gz"
CONFIGS = BUNDLE_DIR / "configs"


@functools.lru_cache(maxsize=1)
def bundle_inference_labels() -> np.ndarray:
    """What ``python -m monai.bundle run --config_file bundle/configs/inference.json`` writes for the shipped sample
    (the workflow itself, run once per session)."""
    out = Path(tempfile.mkdtemp(prefix="weakseg_napari_inference_"))
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=None,
        bundle_root=str(BUNDLE_DIR),
        output_dir=str(out),
        preview=False,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return read_volume(out / "sample_000_instances.nii.gz")


def add_layers(viewer, layer_data: list) -> list:
    """Add ``LayerDataTuple`` s (what the reader returns) to a viewer, as napari does."""
    return [getattr(viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in layer_data]


def write_stack(path: Path) -> np.ndarray:
    """A 48 x 48 x 12 (x, y, z) stack at (0.5, 0.5, 1.0) µm with two bright nuclei; returns the volume."""
    rng = np.random.default_rng(0)
    volume = rng.normal(100, 5, (48, 48, 12)).astype(np.float32)
    volume[8:18, 8:18, 3:8] += 400
    volume[28:40, 26:38, 4:9] += 400
    write_volume(path, volume, (0.5, 0.5, 1.0))
    return volume


def annotate_stack(viewer: Any, image: Any) -> Any:
    """On ``write_stack``'s image layer: both nuclei boxed (programmatically), the first one's mask painted."""
    from weakseg_monai.napari import annotate

    annotator = annotate.start_annotation(viewer, image)
    annotator.add_box([8, 8, 3, 18, 18, 8])
    annotator.add_box([28, 26, 4, 40, 38, 9])
    annotator.mask_layer.brush_size = 3
    for z in range(3, 8):
        annotator.mask_layer.paint((z, 13, 13), 1)
    return annotator


def _tensorflow_installed() -> bool:
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ValueError:  # blocked with sys.modules["tensorflow"] = None
        return False


def why_no_qt() -> str | None:
    """Why the Qt widget tests cannot run here (``None`` when they can). Call it at collection, before any fixture:
    napari's and pytest-qt's fixtures create the Qt application, and without a display Qt aborts the whole process
    instead of raising. pytest-xvfb has set ``DISPLAY`` by then. Under ``WEAKSEG_REQUIRE_DISPLAY=1`` (CI) a missing
    display fails instead."""
    if _tensorflow_installed():
        # measured with napari 0.9.2 / PyQt5 5.15.11 / tensorflow-cpu 2.21: a process that made a napari Qt viewer
        # and imported tensorflow (monai's tensorboard import pulls it in when installed) aborts at exit ("free():
        # invalid pointer", exit code 134) after every test passed. CI's [test] environment has no tensorflow.
        return "tensorflow is installed (the peers extra): it and a napari Qt viewer abort the process at exit"
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    reason = "no display server for the Qt widget tests (install xvfb and xauth: pytest-xvfb then starts one)"
    if os.environ.get("WEAKSEG_REQUIRE_DISPLAY") == "1":
        pytest.fail(reason + "; WEAKSEG_REQUIRE_DISPLAY=1 requires one", pytrace=False)
    return reason
