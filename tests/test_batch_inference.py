"""The ``scheduler`` path of ``inference.json`` (``inference.batch``): many stacks as tasks on a local cluster, a
failure table that does not stop the others, and a stack above ``max_memory_voxels`` segmented blockwise on dask
without being read whole, written in its own format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("distributed", reason="the [scale] extra")

from monai.bundle import ConfigParser  # noqa: E402

from weakseg_monai.data.instances import boxes_from_instances, relabel_consecutive  # noqa: E402
from weakseg_monai.data.io import read_volume, resolve_spacing, write_volume  # noqa: E402
from weakseg_monai.families.loading import load_model  # noqa: E402
from weakseg_monai.inference.distributed import segment_volume  # noqa: E402
from weakseg_monai.metrics.instance import detection_f1  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
SAMPLE = BUNDLE / "sample" / "sample_000.nii.gz"
GT = BUNDLE / "sample_gt" / "sample_000_gt.nii.gz"


def run_inference_json(input_dir: Path, output_dir: Path, **overrides):
    """``inference.json``'s ``run`` through the bundle parser, as ``python -m monai.bundle run`` does."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "input_dir": str(input_dir), "output_dir": str(output_dir),
                   "device": "cpu", **overrides})
    return parser.get_parsed_content("run")


def innermost(err: BaseException) -> BaseException:
    """The error the bundle parser's "Failed to evaluate ConfigExpression" wraps."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return err


def same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    """The same instances voxel for voxel, whatever their ids."""
    a, b = relabel_consecutive(a.astype(np.int32)), relabel_consecutive(b.astype(np.int32))
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_a_local_cluster_segments_every_stack_and_tables_the_one_that_fails(tmp_path):
    """``scheduler: local:2``: one task per stack (NIfTI and TIFF), each written as it finishes; a broken stack fails
    alone and the run ends with the table; the labels are the evaluator's (``scheduler: null``) voxel for voxel."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLE, inputs / "a.nii.gz")
    image = read_volume(SAMPLE)
    write_volume(inputs / "b.tif", image[::-1].copy(), resolve_spacing(SAMPLE))
    (inputs / "broken.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(RuntimeError) as failed:
        run_inference_json(inputs, tmp_path / "cluster", scheduler="local:2")
    table = str(innermost(failed.value))
    assert table.startswith("1 of 3 inputs failed (the others were written)"), table
    assert "broken.nii.gz | FAILED" in table and "a.nii.gz | " in table and "instances ->" in table
    for name in ("a_instances.nii.gz", "a_boxes.json", "a_preview.png", "b_instances.tif", "b_boxes.json"):
        assert (tmp_path / "cluster" / name).is_file(), name
    (inputs / "broken.nii.gz").unlink()
    run_inference_json(inputs, tmp_path / "evaluator")  # scheduler null: the SupervisedEvaluator workflow
    for name in ("a_instances.nii.gz", "b_instances.tif"):
        assert same_labels(read_volume(tmp_path / "cluster" / name), read_volume(tmp_path / "evaluator" / name)), name
    assert not [p for p in (tmp_path / "cluster").iterdir() if p.name.startswith(".tmp_")]


def test_a_stack_above_the_memory_limit_runs_blockwise_on_dask_and_keeps_its_format(tmp_path):
    """``max_memory_voxels`` below the sample's size: the NIfTI is read lazily, segmented by ``segment_volume`` in
    this process and written back as NIfTI with its boxes and preview: the labels ``segment_volume`` gives; the same
    stack as OME-Zarr gives the same labels as ``NAME_instances.ome.zarr``."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLE, inputs / "big.nii.gz")
    image = read_volume(SAMPLE).astype(np.float32)
    write_volume(inputs / "bigz.ome.zarr", image, resolve_spacing(SAMPLE))
    block = [96, 96, 32]
    run_inference_json(inputs, tmp_path / "out", max_memory_voxels=1000, block_size=block)
    labels = read_volume(tmp_path / "out" / "big_instances.nii.gz")
    assert same_labels(read_volume(tmp_path / "out" / "bigz_instances.ome.zarr"), labels), "OME-Zarr in and out"
    written = nib.load(str(tmp_path / "out" / "big_instances.nii.gz"))
    assert labels.shape == image.shape and written.get_data_dtype() == np.uint16
    np.testing.assert_allclose(written.affine, nib.load(str(SAMPLE)).affine)
    network = load_model(BUNDLE / "models" / "model.pt")
    segment_volume(network, image, resolve_spacing(SAMPLE), tmp_path / "direct.ome.zarr", block_size=block)
    assert same_labels(labels, read_volume(tmp_path / "direct.ome.zarr"))
    boxes = json.loads((tmp_path / "out" / "big_boxes.json").read_text())
    assert len(boxes["boxes"]) == len(np.unique(labels)) - 1 and (tmp_path / "out" / "big_preview.png").is_file()
    score = detection_f1(boxes_from_instances(read_volume(GT)), boxes_from_instances(relabel_consecutive(labels)))
    assert score["f1"] > 0.8, score
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp_")]


def test_a_scheduler_that_is_none_of_the_three_forms_is_refused_in_one_line(tmp_path):
    with pytest.raises(RuntimeError) as failed:
        run_inference_json(SAMPLE, tmp_path, scheduler="local2")
    assert isinstance(innermost(failed.value), ValueError)
    assert str(innermost(failed.value)).startswith("scheduler 'local2': use null (in this process), 'local:N'")
