"""OME-Zarr in and out: our (x, y, z) order and spacing round-trip, NGFF 0.4 stores with a channel axis read, and a
.ome.zarr input goes through the bundle's inference and the score command like a NIfTI one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ome_zarr", reason="the [scale] extra")
import zarr  # noqa: E402

from weakseg_monai.data.io import read_volume, resolve_spacing, volume_shape, write_volume  # noqa: E402
from weakseg_monai.data.omezarr import open_zarr, write_zarr_labels  # noqa: E402
from weakseg_monai.families.loading import load_model  # noqa: E402
from weakseg_monai.inference.predictor import WeakSegPredictor  # noqa: E402
from weakseg_monai.inference.workflow import run_inference  # noqa: E402
from weakseg_monai.metrics.scoring import score_folders  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "bundle" / "sample" / "sample_000.nii.gz"


def test_image_round_trips_our_axes_spacing_and_values_and_stores_z_y_x_in_micrometres(tmp_path):
    image = (np.random.default_rng(0).random((70, 90, 12)) * 4000).astype(np.uint16)  # (x, y, z), non-cubic
    path = write_volume(tmp_path / "a.ome.zarr", image, (0.3, 0.4, 2.0))
    volume, spacing = open_zarr(path)
    assert volume.shape == (70, 90, 12) and spacing == (0.3, 0.4, 2.0)
    assert not isinstance(volume, np.ndarray)  # lazy: a dask array, nothing read yet
    assert np.array_equal(read_volume(path), image) and volume_shape(path) == (70, 90, 12)
    assert resolve_spacing(path) == (0.3, 0.4, 2.0)
    multiscales = zarr.open_group(str(path), mode="r").attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscales["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in multiscales["axes"]} == {"micrometer"}
    assert multiscales["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.4, 0.3]
    with pytest.raises(FileExistsError):
        write_volume(path, image, (1, 1, 1))


def test_an_ngff_04_store_with_a_channel_axis_and_nanometres_reads_as_x_y_z_in_micrometres(tmp_path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    czyx = np.arange(1 * 6 * 10 * 14, dtype=np.uint8).reshape(1, 6, 10, 14)
    group = zarr.open_group(str(tmp_path / "b.zarr"), mode="w", zarr_format=2)
    write_image(czyx, group, axes="czyx", fmt=FormatV04(), scale={"z": 1500.0, "y": 250.0, "x": 200.0},
                axes_units={"z": "nanometer", "y": "nanometer", "x": "nanometer"}, scale_factors=[])
    volume, spacing = open_zarr(tmp_path / "b.zarr")
    assert spacing == pytest.approx((0.2, 0.25, 1.5))
    assert np.array_equal(np.asarray(volume), czyx[0].transpose(2, 1, 0))
    two = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=2)
    write_image(np.zeros((2, 4, 8, 8), np.uint8), two, axes="czyx", fmt=FormatV04(), scale_factors=[])
    with pytest.raises(ValueError, match="axis 'c' has 2 entries"):
        open_zarr(tmp_path / "c.zarr")


def test_labels_are_written_as_an_ome_zarr_labels_group_with_levels(tmp_path):
    labels = np.zeros((300, 260, 10), np.int32)  # (x, y, z)
    labels[10:40, 20:50, 2:6] = 7
    path = write_zarr_labels(tmp_path / "p_instances.ome.zarr", labels, (0.5, 0.5, 1.0))
    group = zarr.open_group(str(path), mode="r")
    assert group["labels"].attrs["ome"]["labels"] == ["instances"]
    label = group["labels/instances"]
    assert "image-label" in label.attrs["ome"]
    assert [label[f"s{i}"].shape for i in range(3)] == [(10, 260, 300), (10, 130, 150), (10, 65, 75)]
    assert np.array_equal(read_volume(path), labels)  # a labels-only store reads as its label image


def test_an_ome_zarr_input_is_segmented_written_as_labels_and_scored_like_nifti(tmp_path):
    inputs = tmp_path / "in"
    image = read_volume(SAMPLE)
    write_volume(inputs / "sample_000.ome.zarr", image, resolve_spacing(SAMPLE))
    predictor = WeakSegPredictor(load_model(REPO / "bundle" / "models" / "model.pt"))
    summaries = run_inference(predictor, inputs, tmp_path / "out", preview=False)
    written = tmp_path / "out" / "sample_000_instances.ome.zarr"
    assert written.is_dir() and (tmp_path / "out" / "sample_000_boxes.json").is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp_")]
    labels = read_volume(written)
    run_inference(predictor, SAMPLE, tmp_path / "nifti", preview=False)
    assert np.array_equal(labels, read_volume(tmp_path / "nifti" / "sample_000_instances.nii.gz"))
    boxes = json.loads((tmp_path / "out" / "sample_000_boxes.json").read_text())
    assert len(boxes["boxes"]) == summaries[0]["instances"] == len(np.unique(labels)) - 1 >= 15
    gt = tmp_path / "gt"
    write_volume(gt / "sample_000.ome.zarr", labels, resolve_spacing(SAMPLE))
    assert score_folders(gt, tmp_path / "out")["mean"]["det_f1"] == 1.0
    # a second run replaces the store (an existing output folder is overwritten, as files are)
    run_inference(predictor, inputs, tmp_path / "out", preview=False)
    assert np.array_equal(read_volume(written), labels)
