"""Shared fixtures: small real datasets written to disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from weakseg_monai.data.datalist import write_datalist
from weakseg_monai.data.io import write_volume

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE_DIR = REPO_ROOT / "bundle"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A small synthetic dataset on disk (2 training, 1 validation, 1 test stack)."""
    from weakseg_monai.data.synthetic import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, n_train=2, n_val=1, n_test=1, mask_fraction=0.2, seed=0)
    return out


def make_tiny_item(folder: Path, name: str = "a", fmt: str = "nii.gz") -> dict:
    """Two cube instances in a 24 x 20 x 8 volume; instance 0 has a voxel mask, instance 1 only a box."""
    shape = (24, 20, 8)
    instances = np.zeros(shape, dtype=np.uint16)
    instances[2:8, 3:9, 1:4] = 1
    instances[12:20, 10:16, 3:7] = 2
    rng = np.random.default_rng(0)
    image = (100 + 500 * (instances > 0) + rng.normal(0, 5, shape)).astype(np.float32)
    mask = np.where(instances == 1, 1, 0).astype(np.uint16)
    write_volume(folder / f"{name}_img.{fmt}", image, (0.5, 0.5, 1.0))
    write_volume(folder / f"{name}_mask.{fmt}", mask, (0.5, 0.5, 1.0))
    write_volume(folder / f"{name}_gt.{fmt}", instances, (0.5, 0.5, 1.0))
    return {
        "id": name,
        "image": f"{name}_img.{fmt}",
        "box": [[2, 3, 1, 8, 9, 4], [12, 10, 3, 20, 16, 7]],
        "label": [0, 0],
        "mask": f"{name}_mask.{fmt}",
        "mask_annotated": [True, False],
        "spacing": [0.5, 0.5, 1.0],
        "gt_instances": f"{name}_gt.{fmt}",
    }


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """A valid hand-made dataset folder with one training item (edit its datalist to break it)."""
    write_datalist(tmp_path, {"training": [make_tiny_item(tmp_path)]})
    return tmp_path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd or REPO_ROOT, capture_output=True, text=True, env=env, timeout=600
    )
