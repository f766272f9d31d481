"""Mirroring the volume's faces before prediction: an object a face cuts comes back whole-volume and blockwise as
one instance inside the volume, and the mirrored copies of objects near a face are not returned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from weakseg_monai.families import InstanceModel
from weakseg_monai.inference import WeakSegPredictor
from weakseg_monai.inference.blockwise import Block, mirror_block_faces
from weakseg_monai.networks import WeakInstanceSegNet
from weakseg_monai.networks.postprocess import label_masks, objects_from_labels
from weakseg_monai.transforms.faces import face_pads, face_slivers, mirror_faces


class Recording(nn.Module):
    """The identity, remembering the spatial shape of every input it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[2:]))
        return x


class MirroredThreshold(InstanceModel):
    """Threshold + connected components with a face margin of (4, 4, 2) working voxels: the geometry of mirroring
    without a trained detector (a component in the margin alone is a mirrored copy)."""

    family = "toy-mirrored-threshold"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("working_spacing", torch.tensor([0.5, 0.5, 1.0]))
        self.register_buffer("intensity_percentiles", torch.tensor([1.0, 99.8]))
        self.identity = Recording()

    def size_divisor(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def grid_multiple(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def dense_network(self) -> nn.Module:
        return self.identity

    def find_objects(self, dense, spatial, region=None):
        return [objects_from_labels(ndimage.label(d[0].cpu().numpy() > 0.5)[0]) for d in dense]

    def object_masks(self, dense, index, found, keep):
        return label_masks(found, keep)

    def block_halo(self):
        return (8.0, 8.0, 4.0)

    def face_margin(self):
        return (4.0, 4.0, 2.0)


def test_mirroring_reflects_about_the_edge_voxel_and_only_where_asked():
    array = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    before, after = face_pads((2.4, 9.0, 1.0), array.shape, [(True, False), (True, True), (False, True)])
    assert (before, after) == ([3, 3, 0], [0, 3, 1]), "rounded up, below the size, on the faces asked for"
    mirrored = mirror_faces(array, before, after)
    np.testing.assert_array_equal(mirrored, np.pad(array, list(zip(before, after)), mode="reflect"))
    np.testing.assert_array_equal(mirror_faces(torch.from_numpy(array)[None], before, after)[0].numpy(), mirrored)
    assert mirrored[0, 3, 0] == array[3, 0, 0] and mirrored[3, 3, 0] == array[0, 0, 0]
    snapped = face_pads((2.4, 5.0, 0.5), (40, 6, 3), multiple=(4, 4, 2))
    assert snapped == ([4, 4, 2], [4, 4, 2]), "whole grid multiples; below the size (6: 4, not 8)"


def test_a_block_mirrors_only_the_faces_of_the_volume_it_touches_and_owns_only_the_volume():
    image = np.arange(20 * 10 * 6, dtype=np.float32).reshape(20, 10, 6)
    block = Block(core=((0, 10), (2, 10), (0, 3)), region=((0, 14), (0, 10), (0, 5)))
    grown, crop = mirror_block_faces(block, image, (3.0, 2.0, 1.0))
    assert grown.region == ((-3, 14), (-2, 12), (-1, 5)), "x: low face only; y: both faces; z: low face only"
    assert grown.core == block.core, "a mirrored twin must not be owned (it could win NMS over its original)"
    np.testing.assert_array_equal(crop, np.pad(image[:14, :, :5], [(3, 0), (2, 2), (1, 0)], mode="reflect"))


def test_the_nuclei_family_mirrors_a_fifth_of_its_largest_anchor_shape():
    model = WeakInstanceSegNet(anchor_shapes=[[10, 10, 6], [20, 20, 12], [30, 6, 18]])
    assert model.face_margin() == pytest.approx((6.0, 4.0, 3.6))


@pytest.mark.parametrize("blockwise", [False, True])
def test_a_face_cut_object_is_one_instance_inside_the_volume_and_mirrored_copies_are_dropped(blockwise):
    image = np.zeros((40, 36, 12), dtype=np.float32)
    image[0:3, 10:18, 4:8] = 1.0  # cut by the face x = 0 to 3 voxels
    image[20:28, 2:8, 4:8] = 1.0  # 2 voxels from the face y = 0: its mirror lies in the margin alone
    image[30:36, 20:30, 9:12] = 1.0  # cut by the face z = 11
    kwargs = {"max_whole_voxels": 4000, "block_size": (16, 16, 6)} if blockwise else {}
    model = MirroredThreshold()
    result = WeakSegPredictor(model, **kwargs)(torch.from_numpy(image)[None], (0.5, 0.5, 1.0))
    # the model saw the faces mirrored: the whole volume + 4, 4, 2 per face; the first block's region (0..21,
    # 0..20, 0..10 of the input) + the margin on the faces it touches
    assert model.identity.seen[0] == ((25, 24, 12) if blockwise else (48, 44, 16))
    assert len(result["boxes"]) == int(result["instances"].max()) == 3, result["boxes"]
    expected = [[0, 10, 4, 3, 18, 8], [20, 2, 4, 28, 8, 8], [30, 20, 9, 36, 30, 12]]
    found = sorted(np.asarray(result["boxes"]).round().astype(int).tolist())
    assert found == expected
    np.testing.assert_array_equal(result["instances"] > 0, image > 0)


class SizedThreshold(MirroredThreshold):
    """``MirroredThreshold`` whose objects are 4 x 4 x 1.5 µm: 8 x 8 x 1.5 voxels at its 0.5 x 0.5 x 1 µm."""

    family = "toy-sized-threshold"

    def typical_object_um(self):
        return np.array([4.0, 4.0, 1.5])


@pytest.mark.parametrize("blockwise", [False, True])
def test_a_sliver_a_face_leaves_is_not_reported_where_the_objects_are_thicker(blockwise):
    image = np.zeros((40, 36, 12), dtype=np.float32)
    image[0:2, 10:18, 4:8] = 1.0  # 2 voxels on the face x = 0: a sliver of an 8-voxel object -> dropped
    image[20:28, 0:3, 4:8] = 1.0  # 3 voxels on the face y = 0: kept
    image[10:12, 24:32, 4:8] = 1.0  # 2 voxels thin, but inside the volume: kept
    image[30:36, 20:30, 10:12] = 1.0  # 2 slices on the face z = 11, where objects span 1.5 slices: kept
    kwargs = {"max_whole_voxels": 4000, "block_size": (16, 16, 6)} if blockwise else {}
    result = WeakSegPredictor(SizedThreshold(), **kwargs)(torch.from_numpy(image)[None], (0.5, 0.5, 1.0))
    found = sorted(np.asarray(result["boxes"]).round().astype(int).tolist())
    assert found == [[10, 24, 4, 12, 32, 8], [20, 0, 4, 28, 3, 8], [30, 20, 10, 36, 30, 12]]
    assert int(result["instances"].max()) == 3 and not result["instances"][0:2].any()
    unsized = WeakSegPredictor(MirroredThreshold(), **kwargs)(torch.from_numpy(image)[None], (0.5, 0.5, 1.0))
    assert len(unsized["boxes"]) == 4, "a model that does not know its objects' size drops nothing"


def test_face_slivers_need_a_face_a_thin_side_across_it_and_a_flagged_axis():
    boxes = np.array([[0, 5, 5, 2, 15, 15], [0, 5, 5, 3, 15, 15], [5, 5, 0, 15, 15, 2], [4, 5, 5, 6, 15, 15]])
    assert face_slivers(boxes, (20, 20, 20)).tolist() == [True, False, True, False]
    assert face_slivers(boxes, (20, 20, 20), axes=(True, True, False)).tolist() == [True, False, False, False]
    assert face_slivers(boxes[2:3], (20, 20, 2)).tolist() == [False], "a volume 2 deep: never a cut in z"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mirrored_boxes_are_the_boxes_of_the_mirrored_labels(seed):
    """Training's view of a face (``mirror_boxes``) against the truth: the bounding boxes of the connected
    components of the reflected label volume. An object on a face is one box with its mirror image, one near a
    face gains a copy, corners included. (For objects that are not boxes, a copy the margin clips keeps the clipped
    box, a little loose in the other axes.)"""
    from weakseg_monai.transforms.faces import mirror_boxes

    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(14, 30)), int(rng.integers(14, 30)), int(rng.integers(6, 12)))
    labels = np.zeros(shape, dtype=np.int32)
    boxes = []
    for _ in range(12):  # box-shaped objects that do not overlap: a clipped copy's tight box is then known
        lo = [int(rng.integers(0, s - 2)) for s in shape]
        hi = [min(s, a + int(rng.integers(2, 6))) for a, s in zip(lo, shape)]
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        if not labels[region].any():
            boxes.append(lo + hi)
            labels[region] = len(boxes)
    ids = list(range(1, len(boxes) + 1))
    before, after = [int(rng.integers(0, 5)) for _ in shape], [int(rng.integers(0, 5)) for _ in shape]
    got, source, volume = mirror_boxes(np.asarray(boxes, dtype=np.float32), shape, before, after)
    mirrored = mirror_faces(labels, before, after)
    want = set()
    for index, k in enumerate(ids):
        comp, n = ndimage.label(mirrored == k)
        for sl in ndimage.find_objects(comp):
            want.add((index, *(s.start for s in sl), *(s.stop for s in sl)))
    assert {(int(i), *map(int, b)) for i, b in zip(source, got)} == want
    assert (volume > 0).all() and len(volume) == len(got)
