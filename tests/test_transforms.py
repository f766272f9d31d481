"""The training pipeline of train.json keeps image, boxes, per-box arrays and instance volume consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.apps.detection.transforms.dictionary import ClipBoxToImaged
from monai.bundle import ConfigParser
from monai.transforms import Compose
from monai.utils import set_determinism

from weakseg_monai.data.datalist import load_section, write_datalist
from weakseg_monai.data.io import write_volume
from weakseg_monai.data.validate import DatasetError
from weakseg_monai.transforms import LoadWeakAnnotationd, MarkCutBoxesd, RandZoomBoxVolumed, ResampleToSpacingd

from .conftest import BUNDLE_DIR, make_tiny_item

PATCH = [32, 32, 16]


def _train_pipeline(dataset_dir, **overrides) -> Compose:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_DIR / "configs" / "train.json"))
    parser.update({"dataset_dir": str(dataset_dir), "patch_size": PATCH, "batch_size": 4, **overrides})
    return parser.get_parsed_content("train#preprocessing")


def test_resample_scales_boxes_exactly_and_round_trips():
    image = torch.zeros(1, 40, 40, 10)
    image[0, 8:16, 8:24, 2:6] = 1
    labels = (image > 0).to(torch.int32)
    d = {
        "image": image,
        "instances": labels,
        "box": np.array([[8, 8, 2, 16, 24, 6]], dtype=np.float32),
        "box_volume": np.array([8 * 16 * 4], dtype=np.float32),
        "spacing": (0.25, 0.25, 1.0),
    }
    out = ResampleToSpacingd("image", (0.5, 0.5, 1.0), "instances", "box")(d)
    assert tuple(out["image"].shape) == (1, 20, 20, 10)
    np.testing.assert_allclose(out["box"], [[4, 4, 2, 8, 12, 6]])
    assert out["box_volume"][0] == pytest.approx(4 * 8 * 4)
    nz = torch.nonzero(out["instances"][0])
    assert nz.min(0).values.tolist() == [4, 4, 2] and (nz.max(0).values + 1).tolist() == [8, 12, 6]


def test_mark_cut_boxes_flags_less_than_half_visible():
    d = {
        "box": np.array([[0, 0, 0, 10, 10, 10], [0, 0, 0, 4, 10, 10]], dtype=np.float32),
        "box_volume": np.array([1000, 1000], dtype=np.float32),
    }
    assert MarkCutBoxesd(min_visible=0.5)(d)["box_ignore"].tolist() == [0, 1]


def test_cut_parts_are_positives_unless_thinner_than_anyone_would_box():
    """The default (train.json): a crop-cut part is a positive down to 3 voxels per axis; a thin box no crop cut
    (an annotated face-cut sliver) is never flagged."""
    d = {
        "box": np.array([[0, 0, 0, 4, 10, 10], [0, 0, 0, 2, 10, 10], [0, 0, 0, 2, 10, 10]], dtype=np.float32),
        "box_volume": np.array([1000, 1000, 200], dtype=np.float32),
    }
    assert MarkCutBoxesd()(d)["box_ignore"].tolist() == [0, 1, 0]


def test_quarter_turns_keep_every_crop_of_a_non_square_patch_the_same_shape(synthetic_dataset):
    """A patch of 48 x 32 x 16: train.json's augmentations must not turn some crops into 32 x 48 (the reported
    'stack expects each tensor to be equal size' crash on a 28 x 61 x 31 volume)."""
    set_determinism(1)
    pipeline = _train_pipeline(synthetic_dataset, patch_size=[48, 32, 16])
    item = load_section(synthetic_dataset, "training")[0]
    shapes = {tuple(crop["image"].shape) for _ in range(8) for crop in pipeline(item)}
    assert shapes == {(1, 48, 32, 16)}
    square = _train_pipeline(synthetic_dataset, patch_size=[32, 32, 16])
    turned = [crop for _ in range(4) for crop in square(item)]
    assert all(tuple(c["image"].shape) == (1, 32, 32, 16) for c in turned)


def test_zoom_keeps_box_volume_in_zoomed_voxels_and_flags_what_it_cuts():
    """A keep-size zoom-in crops the patch again: the box it pushes half out is flagged, the central one not."""
    d = {
        "image": torch.zeros(1, 40, 40, 20),
        "box": np.array([[16, 16, 8, 24, 24, 12], [0, 10, 8, 8, 18, 12]], dtype=np.float32),
        "box_volume": np.array([256, 256], dtype=np.float32),
    }
    zoom = RandZoomBoxVolumed("image", "box", "image", prob=1.0, min_zoom=1.5, max_zoom=1.5, keep_size=True)
    out = zoom(d)
    np.testing.assert_allclose(out["box_volume"], [256 * 1.5**3] * 2, rtol=1e-5)
    central = np.asarray(out["box"])[0]
    assert np.prod(central[3:] - central[:3]) == pytest.approx(256 * 1.5**3, rel=1e-5)
    out = ClipBoxToImaged("box", ["box_volume"], "image", remove_empty=True)(out)
    assert MarkCutBoxesd(min_visible=0.5)(out)["box_ignore"].tolist() == [0, 1]
    # without the zoom (prob 0) nothing changes
    same = RandZoomBoxVolumed("image", "box", "image", prob=0.0, min_zoom=1.5, max_zoom=1.5)(d)
    np.testing.assert_array_equal(same["box_volume"], d["box_volume"])


def test_loader_fails_fast_with_the_validator_message(tiny_dataset):
    item = load_section(tiny_dataset, "training")[0]
    item["label"] = [0]
    with pytest.raises(DatasetError, match="1 labels for 2 boxes"):
        LoadWeakAnnotationd()(item)
    item = load_section(tiny_dataset, "training")[0]
    item["box"][1] = [12, 10, 3, 30, 16, 7]
    with pytest.raises(DatasetError, match="leave the image"):
        LoadWeakAnnotationd()(item)


def test_mask_fraction_simulates_nested_masks_from_gt(synthetic_dataset):
    item = load_section(synthetic_dataset, "training")[0]
    ten = LoadWeakAnnotationd(mask_fraction=0.1, seed=3)(item)
    twenty = LoadWeakAnnotationd(mask_fraction=0.2, seed=3)(item)
    as_given = LoadWeakAnnotationd()(item)
    n = len(item["box"])
    assert abs(int(twenty["mask_annotated"].sum()) - 0.2 * n) <= 1
    assert not (ten["mask_annotated"].astype(bool) & ~twenty["mask_annotated"].astype(bool)).any()
    np.testing.assert_array_equal(as_given["mask_annotated"].astype(bool), item["mask_annotated"])
    annotated_ids = set(np.nonzero(twenty["mask_annotated"])[0] + 1)
    assert set(torch.unique(twenty["instances"]).tolist()) - {0} == annotated_ids


def test_augmented_crops_stay_consistent(synthetic_dataset):
    """Crops, flips, 90° rotations, zoom and clipping keep boxes, per-box arrays and instances together."""
    set_determinism(0)
    pipeline = _train_pipeline(synthetic_dataset)
    item = load_section(synthetic_dataset, "training")[0]
    checked = 0
    for _ in range(6):
        for crop in pipeline(item):
            assert tuple(crop["image"].shape) == (1, *PATCH) and tuple(crop["instances"].shape) == (1, *PATCH)
            boxes = np.asarray(crop["box"]).reshape(-1, 6)
            n = len(boxes)
            for key in ("label", "mask_annotated", "instance_id", "box_volume", "box_ignore"):
                assert len(np.asarray(crop[key]).reshape(-1)) == n, key
            assert (boxes[:, :3] >= 0).all() and (boxes[:, 3:] <= np.array(PATCH)).all()
            instances = np.asarray(crop["instances"])[0]
            for k in np.nonzero(np.asarray(crop["mask_annotated"]).reshape(-1))[0]:
                voxels = np.argwhere(instances == int(np.asarray(crop["instance_id"]).reshape(-1)[k]))
                if len(voxels):
                    lo, hi = voxels.min(0), voxels.max(0) + 1
                    assert (lo >= np.floor(boxes[k, :3]) - 1).all() and (hi <= np.ceil(boxes[k, 3:]) + 1).all()
                    checked += 1
    assert checked > 0


def test_volume_smaller_than_patch_is_padded_at_the_end(tmp_path):
    item = make_tiny_item(tmp_path)  # 24 x 20 x 8 at 0.5 x 0.5 x 1.0
    write_datalist(tmp_path, {"training": [item]})
    set_determinism(0)
    # at its native spacing (the planner would upsample these 3 µm objects to ~66 x 55 x 21, larger than the patch)
    pipeline = _train_pipeline(tmp_path, working_spacing=[0.5, 0.5, 1.0])
    crops = pipeline(load_section(tmp_path, "training")[0])
    assert len(crops) == 4
    for crop in crops:
        assert tuple(crop["image"].shape) == (1, *PATCH)
        assert len(np.asarray(crop["box"]).reshape(-1, 6)) >= 1


def test_loader_reads_tiff_spacing_and_keeps_xyz(tmp_path):
    image = np.zeros((30, 20, 6), dtype=np.uint16)
    image[5:10, 4:8, 1:3] = 1000
    write_volume(tmp_path / "img.tif", image, (0.25, 0.25, 1.0))
    d = LoadWeakAnnotationd()(
        {"id": "t", "image": str(tmp_path / "img.tif"), "box": [[5, 4, 1, 10, 8, 3]], "label": [0]}
    )
    assert tuple(d["image"].shape) == (1, 30, 20, 6)
    assert d["spacing"] == pytest.approx((0.25, 0.25, 1.0))
    assert float(d["image"][0, 6, 5, 2]) == 1000


def test_one_input_rule_for_inference_validation_evaluation_and_the_predictor(synthetic_dataset, tmp_path):
    """``ToWorkingGridd`` is the preprocessing every predicting workflow composes (and the predictor's own), and
    it gives what training's load transforms give the image (``InputRuled``, then ``MirrorFacesd``: the faces
    mirrored as the predictor mirrors them), to the bit."""
    from weakseg_monai.inference import WeakSegPredictor
    from weakseg_monai.networks import WeakInstanceSegNet
    from weakseg_monai.transforms import ToWorkingGridd

    configs = BUNDLE_DIR / "configs"
    parsers = {}
    for name, files in {
        "inference": ["inference.json"],
        "evaluate": ["train.json", "evaluate.json"],
        "train": ["train.json"],
    }.items():
        parser = ConfigParser()
        parser.read_config([str(configs / f) for f in files])
        parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(synthetic_dataset)})
        parsers[name] = parser
    composed = {
        "inference": parsers["inference"].get_parsed_content("preprocessing"),
        "evaluate": parsers["evaluate"].get_parsed_content("preprocessing"),
        "validation": parsers["train"].get_parsed_content("validate#preprocessing"),
    }
    for name, compose in composed.items():
        assert isinstance(compose.transforms[-1], ToWorkingGridd), name
    network = WeakInstanceSegNet(working_spacing=(0.5, 0.5, 2.0))  # a coarser z than the data: a real resample
    assert isinstance(WeakSegPredictor(network).working_grid(), ToWorkingGridd)

    item = load_section(synthetic_dataset, "training")[0]
    parsers["train"].update({"working_spacing": [0.5, 0.5, 2.0]})
    trained = parsers["train"].get_parsed_content("network_def")
    ours = Compose([LoadWeakAnnotationd(), ToWorkingGridd(trained)])(item)
    training = Compose(parsers["train"].get_parsed_content("load_transforms"))(item)
    seen, before = WeakSegPredictor(trained).mirrored(ours["image"])  # what the network sees: faces mirrored
    assert any(before) and ours["image"].shape[-1] < 32
    assert tuple(seen.shape) == tuple(training["image"].shape)
    np.testing.assert_array_equal(seen.numpy(), np.asarray(training["image"]))
    np.testing.assert_array_equal(ours["working_grid"]["zoom"], training["zoom"])


@pytest.mark.parametrize("configs", [["train.json"], ["train.json", "train_baseline.json"]])
def test_training_takes_its_input_rule_from_the_network_it_trains(configs, synthetic_dataset, tmp_path):
    """train.json (and the baseline's override) normalise and resample with the rule the checkpoint will carry, so
    inference cannot differ from training; the clamp is the one ``normalise`` applies."""
    from weakseg_monai.transforms import InputRule, InputRuled
    from weakseg_monai.transforms.dictionary import normalise

    parser = ConfigParser()
    parser.read_config([str(BUNDLE_DIR / "configs" / f) for f in configs])
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(synthetic_dataset)})
    steps = parser.get_parsed_content("load_transforms")
    rules = [s.rule for s in steps if isinstance(s, InputRuled)]
    assert rules == [InputRule.of(parser.get_parsed_content("network_def"))]
    assert rules[0].working_spacing == tuple(parser.get_parsed_content("working_spacing"))
    x = torch.tensor([0.0, 100.0, 1e6, -1e6])
    np.testing.assert_allclose(normalise(x, 0.0, 100.0).numpy(), [0.0, 1.0, 5.0, -1.0])


@pytest.mark.parametrize("whole_box", [True, False])
def test_bounded_box_crop_draws_the_centres_monai_draws_from_one_mask_channel(whole_box):
    """Same crop centres as MONAI's ``RandCropBoxByPosNegLabeld`` on the same random stream, boxes near every face."""
    from monai.apps.detection.transforms.dictionary import RandCropBoxByPosNegLabeld

    from weakseg_monai.transforms import BoundedRandCropBoxByPosNegLabeld

    rng = np.random.default_rng(3)
    size = (40, 36, 20)
    start = rng.uniform(-3, np.array(size) - 2, size=(25, 3))
    boxes = np.concatenate([start, start + rng.uniform(1.5, 9, size=(25, 3))], axis=1)
    kwargs = dict(image_keys="image", box_keys="box", label_keys="label", spatial_size=(16, 16, 8),
                  whole_box=whole_box, num_samples=6, pos=1, neg=1)
    ours, monai = BoundedRandCropBoxByPosNegLabeld(**kwargs), RandCropBoxByPosNegLabeld(**kwargs)
    for transform in (ours, monai):
        transform.set_random_state(seed=11)
        transform.spatial_size = transform.spatial_size_
        transform.randomize(boxes, size)
    assert [tuple(map(int, c)) for c in ours.centers] == [tuple(map(int, c)) for c in monai.centers]


def test_face_cut_clears_outside_clips_boxes_and_drops_emptied_ones_with_their_entries():
    """A training crop cut as a stack's crop would be: outside is the padding value, each box is its visible part
    (a positive down to 3 voxels; ``MarkCutBoxesd`` ignores thinner slivers), an emptied box leaves every list."""
    from weakseg_monai.transforms import RandFaceCutd

    transform = RandFaceCutd(prob=1.0, max_fraction=0.5)
    transform.set_random_state(seed=0)
    instances = torch.zeros(1, 20, 20, 10, dtype=torch.int32)
    instances[:, 4:12, 4:12, 0:6] = 1
    instances[:, 0:3, 0:3, 0:3] = 2
    instances[:, 14:20, 14:20, 5:10] = 3
    data = {
        "image": torch.full((1, 20, 20, 10), 2.0),
        "instances": instances,
        "box": np.array([[4, 4, 0, 12, 12, 6], [0, 0, 0, 3, 3, 3], [14, 14, 5, 20, 20, 10]], dtype=np.float32),
        "label": np.zeros(3, dtype=np.int64),
        "mask_annotated": np.array([1, 0, 1], dtype=np.uint8),
        "instance_id": np.array([1, 2, 3]),
        "box_volume": np.array([384, 27, 180], dtype=np.float32),
    }
    seen_cut = seen_dropped = 0
    for _ in range(40):
        out = transform(data)
        start, end = np.array(transform.start), np.array(transform.end)
        image, labels = out["image"][0].numpy(), out["instances"][0].numpy()
        inside = np.zeros(image.shape, dtype=bool)
        inside[start[0] : end[0], start[1] : end[1], start[2] : end[2]] = True
        assert (image[inside] == 2.0).all() and (image[~inside] == 0.0).all() and (labels[~inside] == 0).all()
        kept = out["instance_id"].tolist()
        for key in ("label", "mask_annotated", "box_volume"):
            assert len(out[key]) == len(kept), key
        for box, k in zip(out["box"], kept):
            voxels = np.argwhere(labels == k)
            assert len(voxels) and (box[:3] == voxels.min(0)).all() and (box[3:] == voxels.max(0) + 1).all()
        seen_dropped += len(kept) < 3
        marked = MarkCutBoxesd()(out)
        extent = out["box"][:, 3:] - out["box"][:, :3]
        cut = np.prod(extent, axis=1) < out["box_volume"]
        assert marked["box_ignore"].tolist() == (cut & (extent < 3).any(axis=1)).tolist()
        seen_cut += int(cut.any())
    assert seen_cut and seen_dropped
    assert torch.equal(data["instances"], instances) and data["box"].shape == (3, 6)  # the input is not changed


def test_a_face_cut_mirrors_as_the_predictor_does_and_moves_the_boxes_with_the_image():
    """With ``mirror_margin`` a moved face reflects the region kept (up to the margin, padding beyond): every box is
    the bounding box of one connected piece of its instance in the label volume (an object the cut crosses merged
    with its reflection, copies of those near the cut, under ids of their own), and the image shows the same
    reflection."""
    from scipy import ndimage

    from weakseg_monai.transforms import RandFaceCutd

    margin = (4, 4, 2)
    transform = RandFaceCutd(prob=1.0, max_fraction=0.5, mirror_margin=margin)
    transform.set_random_state(seed=0)
    instances = torch.zeros(1, 20, 20, 10, dtype=torch.int32)
    boxes = np.array([[4, 4, 0, 12, 12, 6], [0, 0, 0, 3, 3, 3], [14, 14, 5, 20, 20, 10]], dtype=np.float32)
    for k, box in enumerate(boxes.astype(int), start=1):
        instances[0, box[0] : box[3], box[1] : box[4], box[2] : box[5]] = k
    image = torch.rand(1, 20, 20, 10, generator=torch.Generator().manual_seed(0)) + 1.0
    data = {"image": image, "instances": instances, "box": boxes, "label": np.zeros(3, dtype=np.int64),
            "mask_annotated": np.ones(3, dtype=np.uint8), "instance_id": np.array([1, 2, 3]),
            "box_volume": np.prod(boxes[:, 3:] - boxes[:, :3], axis=1)}
    seen_merged = 0
    for _ in range(30):
        out = transform(data)
        start, end = transform.start, transform.end
        labels = out["instances"][0].numpy()
        pieces = set()
        assert len(set(out["instance_id"].tolist())) == len(out["box"])  # one instance per id, copies renumbered
        for k in np.unique(labels[labels > 0]):
            components, _ = ndimage.label(labels == k)
            pieces |= {(k, *(s.start for s in sl), *(s.stop for s in sl)) for sl in ndimage.find_objects(components)}
        assert {(int(k), *map(int, b)) for k, b in zip(out["instance_id"], out["box"])} == pieces
        for key in ("label", "mask_annotated", "box_volume"):
            assert len(out[key]) == len(out["box"]), key
        for axis in range(3):  # the image one voxel beyond a moved face is the reflection of one voxel inside it
            if start[axis] > 0 and end[axis] - start[axis] > 1:
                kept = [slice(a, b) for a, b in zip(start, end)]
                beyond, inside = list(kept), list(kept)
                beyond[axis], inside[axis] = start[axis] - 1, start[axis] + 1
                assert torch.equal(out["image"][0][tuple(beyond)], image[0][tuple(inside)])
        seen_merged += any(int(b[a]) < start[a] for b in out["box"] for a in range(3))
    assert seen_merged
