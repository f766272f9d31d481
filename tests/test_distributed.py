"""Blockwise inference on dask (``inference.distributed``): the same labels as the in-memory blockwise core, from a
lazy OME-Zarr input, in this process and on a LocalCluster of 2 worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed", reason="the [scale] extra")

from weakseg_monai.data.instances import relabel_consecutive  # noqa: E402
from weakseg_monai.data.io import read_volume, resolve_spacing, write_volume  # noqa: E402
from weakseg_monai.data.omezarr import open_zarr  # noqa: E402
from weakseg_monai.families.loading import load_model  # noqa: E402
from weakseg_monai.inference.blockwise import predict_blockwise  # noqa: E402
from weakseg_monai.inference.distributed import segment_volume  # noqa: E402
from weakseg_monai.transforms.input_rule import InputRule  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "bundle" / "sample" / "sample_000.nii.gz"
BLOCK = (96, 96, 32)  # working voxels: 6 blocks over the doubled sample, so objects cross core borders


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The sample doubled along x (256 x 128 x 32) as a lazy OME-Zarr volume, and the in-memory blockwise labels."""
    folder = tmp_path_factory.mktemp("dask")
    image = read_volume(SAMPLE).astype(np.float32)
    image = np.concatenate([image, image[::-1]], axis=0)
    spacing = resolve_spacing(SAMPLE)
    write_volume(folder / "in.ome.zarr", image, spacing)
    network = load_model(REPO / "bundle" / "models" / "model.pt")
    rule = InputRule.of(network)
    _, zoom = rule.working_shape(image.shape, spacing)
    reference = predict_blockwise(network, image, zoom, rule.intensity_range(image), BLOCK)["instances"]
    return folder, network, reference


def same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    """The same instances voxel for voxel, whatever their ids."""
    a, b = relabel_consecutive(a.astype(np.int32)), relabel_consecutive(b.astype(np.int32))
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_dask_blockwise_from_a_lazy_ome_zarr_volume_equals_the_in_memory_blockwise_core(case):
    folder, network, reference = case
    volume, spacing = open_zarr(folder / "in.ome.zarr")
    # chunks of 16 x 64 x 64 (z, y, x): 16 paste tasks, objects across chunk borders
    found = segment_volume(network, volume, spacing, folder / "out.ome.zarr", block_size=BLOCK, chunks_zyx=(16, 64, 64))
    labels = read_volume(folder / "out.ome.zarr")
    assert labels.shape == volume.shape and resolve_spacing(folder / "out.ome.zarr") == spacing
    assert same_labels(labels, reference) and len(np.unique(labels)) - 1 == len(np.unique(reference)) - 1 >= 30
    assert set(np.unique(labels)[1:]) <= set(found["ids"].tolist())  # ids are the returned objects'
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp_")]
    with pytest.raises(FileExistsError):  # refused before any block is predicted
        segment_volume(network, volume, spacing, folder / "out.ome.zarr", block_size=BLOCK)


def test_blockwise_labels_agree_with_the_whole_volume_labels(case):
    """The issue's bar: >= 99% of the whole-volume instances matched at IoU >= 0.9, counts within 0.5%, none split
    or duplicated at a core border (blocks on the model's grid; off it: 78%, mean IoU 0.92)."""
    import torch

    from weakseg_monai.inference.predictor import WeakSegPredictor
    from weakseg_monai.metrics.instance import instance_iou

    folder, network, reference = case
    image = read_volume(folder / "in.ome.zarr")
    whole = WeakSegPredictor(network, max_whole_voxels=10**9)(torch.as_tensor(image[None]), (0.5, 0.5, 1.0))
    whole = relabel_consecutive(whole["instances"].astype(np.int32))
    blocks = relabel_consecutive(reference.astype(np.int32))
    iou, _, _ = instance_iou(whole, blocks)
    assert (iou.max(axis=1) >= 0.9).mean() >= 0.99
    assert abs(int(blocks.max()) - int(whole.max())) <= 0.005 * whole.max()
    assert ((iou >= 0.5).sum(axis=0) <= 1).all() and ((iou >= 0.5).sum(axis=1) <= 1).all()  # no split, no double


def test_a_local_cluster_of_two_processes_gives_the_in_process_labels(case):
    folder, network, reference = case
    volume, spacing = open_zarr(folder / "in.ome.zarr")
    segment_volume(network, volume, spacing, folder / "cluster.ome.zarr", scheduler="local:2", block_size=BLOCK)
    assert same_labels(read_volume(folder / "cluster.ome.zarr"), reference)
