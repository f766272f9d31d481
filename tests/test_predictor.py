"""``WeakSegPredictor`` output mapping: instances and boxes agree one-to-one in the input's own grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import ScaleIntensityRangePercentiles

from weakseg_monai.data.instances import boxes_from_instances
from weakseg_monai.data.io import write_volume
from weakseg_monai.data.synthetic import NucleusModel, generate_stack
from weakseg_monai.inference import WeakSegPredictor
from weakseg_monai.inference.predictor import drop_vanished, scale_percentiles

from .test_bundle import shipped_model


def test_drop_vanished_removes_empty_instances_and_renumbers():
    volume = torch.tensor([[[0, 1, 3], [3, 0, 0]]], dtype=torch.int32)
    found = {"boxes": np.arange(12.0).reshape(3, 4), "scores": np.array([0.9, 0.8, 0.7]), "labels": np.zeros(3)}
    out = drop_vanished(volume, found)
    assert out.tolist() == [[[0, 1, 2], [2, 0, 0]]] and out.dtype == torch.int32
    assert found["scores"].tolist() == [0.9, 0.7] and len(found["boxes"]) == 2
    assert drop_vanished(out, found) is out  # nothing missing: the same tensor, no copy


@pytest.mark.parametrize("spacing", [(0.25, 0.25, 0.5), (1.0, 1.0, 2.0)], ids=["finer-input", "coarser-input"])
def test_every_box_has_voxels_and_labels_are_consecutive(spacing):
    """Finer input (labels grow back) and coarser input (labels shrink back, small ones may vanish)."""
    shape = tuple(int(round(s * 0.5 / p)) for s, p in zip((96, 96, 24), spacing))
    image, truth = generate_stack([5], shape=shape, spacing=spacing, model=NucleusModel(n_cells=(12, 14)))
    pred = WeakSegPredictor(shipped_model())(torch.from_numpy(image.astype(np.float32))[None], spacing)
    k = len(pred["boxes"])
    assert k >= 0.7 * int(truth.max()), (k, int(truth.max()))
    assert pred["instances"].shape == shape and pred["instances"].dtype == np.int32
    assert np.unique(pred["instances"]).tolist() == list(range(k + 1))
    assert len(pred["scores"]) == len(pred["labels"]) == k
    # each box holds its instance (boxes are the detector's, the instance its mask inside the box)
    inside = boxes_from_instances(pred["instances"])
    assert (inside[:, :3] >= np.floor(pred["boxes"][:, :3]) - 1).all()
    assert (inside[:, 3:] <= np.ceil(pred["boxes"][:, 3:]) + 1).all()


@pytest.mark.parametrize("shape", [(1, 40, 30, 12), (1, 128, 128, 70)], ids=["quantile-branch", "numpy-branch"])
def test_inference_normalisation_equals_the_training_transform(shape):
    """Training normalises with MONAI's transform (torch.quantile under 1 M voxels, np.percentile above)."""
    x = torch.from_numpy(np.random.default_rng(0).gamma(2.0, 100.0, size=shape).astype(np.float32))
    monai = ScaleIntensityRangePercentiles(1.0, 99.8, b_min=0.0, b_max=1.0, clip=False)(x)
    ours = scale_percentiles(x, 1.0, 99.8)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), np.asarray(monai), atol=1e-5)
    flat = torch.full(shape, 7.0)
    np.testing.assert_array_equal(scale_percentiles(flat, 1.0, 99.8).numpy(), np.zeros(shape, np.float32))


def test_inputs_whose_outputs_collide_are_refused_before_any_work(tmp_path):
    from weakseg_monai.inference.writer import list_inputs

    write_volume(tmp_path / "a.nii.gz", np.zeros((8, 8, 4), dtype=np.uint16), (1.0, 1.0, 1.0))
    write_volume(tmp_path / "a.tif", np.zeros((8, 8, 4), dtype=np.uint16), (1.0, 1.0, 1.0))
    write_volume(tmp_path / "b.tif", np.zeros((8, 8, 4), dtype=np.uint16), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"a.nii.gz and a.tif -> a_instances"):
        list_inputs(tmp_path)


def test_earlier_predictions_in_the_input_folder_are_not_segmented(tmp_path):
    from weakseg_monai.inference.writer import list_inputs

    write_volume(tmp_path / "a.nii.gz", np.zeros((8, 8, 4), dtype=np.uint16), (1.0, 1.0, 1.0))
    write_volume(tmp_path / "a_instances.nii.gz", np.zeros((8, 8, 4), dtype=np.uint16), (1.0, 1.0, 1.0))
    assert [p.name for p in list_inputs(tmp_path)] == ["a.nii.gz"]


def test_an_unwritable_output_folder_fails_before_prediction_and_stale_temporaries_go(tmp_path):
    from weakseg_monai.inference.writer import check_output_dir

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="not writable.*--output_dir"):
        check_output_dir(blocker / "out")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".tmp_999999999_a_instances.nii.gz").write_bytes(b"partial")  # a PID that cannot be alive
    check_output_dir(out)
    assert not list(out.iterdir())


def test_synth_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    from .conftest import run_cli

    (tmp_path / "datalist.json").write_text("{}")
    refused = run_cli("-m", "weakseg_monai", "synth", "--out", str(tmp_path), "--n-train", "1", "--n-val", "0",
                      "--n-test", "0", "--shape", "(32,32,8)")
    assert refused.returncode == 2 and "--overwrite" in refused.stdout
    assert (tmp_path / "datalist.json").read_text() == "{}"
    done = run_cli("-m", "weakseg_monai", "synth", "--out", str(tmp_path), "--n-train", "1", "--n-val", "0",
                   "--n-test", "0", "--shape", "(32,32,8)", "--overwrite")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "datalist.json").read_text() != "{}"


def test_more_than_300_nuclei_are_all_found(tmp_path):
    """The shipped sample tiled 4 x 4 (416 nuclei): detection limits scale with the volume (a whole-volume cap of
    300 gave Det F1 0.53 on such a stack)."""
    from weakseg_monai.data.io import read_volume
    from weakseg_monai.metrics import detection_f1

    from .test_bundle import BUNDLE_DIR

    image = read_volume(BUNDLE_DIR / "sample" / "sample_000.nii.gz")
    gt = read_volume(BUNDLE_DIR / "sample_gt" / "sample_000_gt.nii.gz").astype(np.int32)
    tiled_gt = np.zeros((4 * gt.shape[0], 4 * gt.shape[1], gt.shape[2]), dtype=np.int32)
    for k, (i, j) in enumerate((i, j) for i in range(4) for j in range(4)):
        tile = np.where(gt > 0, gt + k * int(gt.max()), 0)
        tiled_gt[i * gt.shape[0] : (i + 1) * gt.shape[0], j * gt.shape[1] : (j + 1) * gt.shape[1]] = tile
    tiled = torch.from_numpy(np.tile(image, (4, 4, 1)).astype(np.float32))[None]
    result = WeakSegPredictor(shipped_model())(tiled, (0.5, 0.5, 1.0))
    gt_boxes = boxes_from_instances(tiled_gt)
    assert len(gt_boxes) > 400
    assert detection_f1(gt_boxes, result["boxes"])["f1"] >= 0.9


def test_a_wrong_spacing_gets_a_size_warning(tmp_path, caplog):
    """The shipped sample declared at 3x its voxel size: its nuclei look ~3x larger than trained on."""
    import logging

    from weakseg_monai.inference import run_inference
    from weakseg_monai.inference.predictor import scale_mismatch

    from .test_bundle import BUNDLE_DIR

    model = shipped_model()
    sample = BUNDLE_DIR / "sample" / "sample_000.nii.gz"
    with caplog.at_level(logging.WARNING):
        run_inference(WeakSegPredictor(model), sample, tmp_path / "right", preview=False)
    assert "than the model was trained on" not in caplog.text
    boxes = boxes_from_instances(generate_stack([3], shape=(96, 96, 32))[1])
    assert "larger than the model" in scale_mismatch(boxes, (1.5, 1.5, 3.0), model)
    assert "smaller than the model" in scale_mismatch(boxes, (0.15, 0.15, 0.3), model)
    assert scale_mismatch(boxes, (0.5, 0.5, 1.0), model) is None
    assert "no objects found" in scale_mismatch(np.zeros((0, 6)), (0.5, 0.5, 1.0), model)
    # with the volume's shape, face-cut boxes are pieces and say nothing about the spacing; whole ones still do
    assert "smaller than the model" in scale_mismatch(boxes, (0.15, 0.15, 0.3), model, shape=(96, 96, 32))
    cut = boxes.copy()
    cut[:, 0] = 0  # every object cut by the x = 0 face (a crop smaller than its objects)
    assert scale_mismatch(cut, (0.15, 0.15, 0.3), model, shape=(96, 96, 32)) is None
