"""Helpers of the napari plugin's tests (imported after ``pytest.importorskip("napari")``)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
from monai.bundle import ConfigWorkflow

from weakseg_monai.data.io import read_volume

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
