"""The generalisation suite's generator presets: sizes, counts, packing, SNR / dtype, membrane walls, files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from weakseg_monai.data.datalist import read_datalist
from weakseg_monai.data.instances import boxes_from_instances
from weakseg_monai.data.io import read_volume
from weakseg_monai.data.synthetic import MIN_EXTENT_VOX, SUITE, generate_stack, write_suite_dataset
from weakseg_monai.data.validate import validate_dataset

# sha1 of generate_stack([0, 0, 0]) (image, labels) taken before the suite knobs were added: must never change
DEFAULT_STACK_SHA1 = ("c7c5f0aa835ce3ab8420bc60ad260532f6a63bf7", "651b028b4dd4b6737e71cf0c94e637ef07569117")

# objects per volume (border-cut pieces included)
COUNT_RANGE = {
    "hl60": (10, 40),
    "small-dense": (30, 60),
    "large-sparse": (4, 16),
    "aniso5": (15, 50),
    "low-snr-uint8": (10, 40),
    "crowd": (40, 72),
    "membrane": (100, 180),
}


@pytest.fixture(scope="module")
def stacks() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The first training volume of every preset (seed [0, 0, 0], as ``write_suite_dataset`` draws it)."""
    return {n: generate_stack([0, 0, 0], spec.shape, spec.spacing, spec.model) for n, spec in WHOLE_STACKS.items()}


def test_default_stack_is_bit_identical():
    image, labels = generate_stack([0, 0, 0])
    assert (hashlib.sha1(image.tobytes()).hexdigest(), hashlib.sha1(labels.tobytes()).hexdigest()) == (
        DEFAULT_STACK_SHA1
    )


WHOLE_STACKS = {name: spec for name, spec in SUITE.items() if spec.crops is None}


def test_registry_covers_the_suite():
    assert set(WHOLE_STACKS) == set(COUNT_RANGE) and set(SUITE) - set(WHOLE_STACKS) == {"face-cut"}
    for name, spec in SUITE.items():
        assert spec.name == name and spec.n_test == 3 and spec.description
        # small stacks keep the suite fast; the membrane preset holds whole cells (issue 25: 48 x 48 x 24 µm)
        assert np.prod(spec.shape) <= (10_000_000 if name == "membrane" else 2_100_000)
    assert SUITE["small-dense"].n_train == SUITE["crowd"].n_train == 1


@pytest.mark.parametrize("name", list(COUNT_RANGE))
def test_sizes_and_counts(stacks, name):
    image, labels = stacks[name]
    spec = SUITE[name]
    assert image.shape == labels.shape == spec.shape
    n = int(labels.max())
    lo, hi = COUNT_RANGE[name]
    assert lo <= n <= hi
    assert set(np.unique(labels)) >= set(range(1, n + 1)), "labels must be consecutive"
    boxes = boxes_from_instances(labels)
    extents = boxes[:, 3:] - boxes[:, :3]
    assert (extents >= np.array(MIN_EXTENT_VOX)).all(), f"objects thinner than {MIN_EXTENT_VOX}: {extents.min(0)}"


def test_crowd_is_packed_and_overlapping(stacks):
    _, labels = stacks["crowd"]
    assert 0.5 <= (labels > 0).mean() <= 0.7
    a, b = labels[:-1], labels[1:]
    assert ((a > 0) & (b > 0) & (a != b)).sum() > 1000, "packed nuclei must touch each other"
    assert SUITE["crowd"].model.overlap_tolerance < 0.82, "placement must allow overlap"


def test_low_snr_is_uint8_with_peak_snr_about_3(stacks):
    image, labels = stacks["low-snr-uint8"]
    assert image.dtype == np.uint8
    assert image.min() <= 10 and image.max() >= 240, "the uint8 range must be used"
    values = image.astype(np.float64)
    background_pairs = (labels[1:] == 0) & (labels[:-1] == 0)
    noise = np.diff(values, axis=0)[background_pairs].std() / np.sqrt(2)  # the PSF leaves neighbours ~independent
    snr = (values[labels > 0].mean() - values[labels == 0].mean()) / noise
    assert 2.5 < snr < 3.5
    assert stacks["hl60"][0].dtype == np.uint16


def test_membrane_walls_bright_interiors_dark(stacks):
    image, labels = stacks["membrane"]
    assert (labels > 0).mean() >= 0.95
    walls = ndimage.maximum_filter(labels, size=3) != ndimage.minimum_filter(labels, size=3)
    interior = ndimage.maximum_filter(labels, size=(15, 15, 9)) == ndimage.minimum_filter(labels, size=(15, 15, 9))
    assert walls.any() and interior.any()
    assert image[walls].mean() > image[interior].mean() + 5 * image[interior].std() / 2


def test_written_suite_dataset(tmp_path):
    out = tmp_path / "crowd"
    write_suite_dataset("crowd", out, seed=0, mask_fraction=0.2)
    report = validate_dataset(out)
    assert report.ok, report.format()
    data = read_datalist(out)
    assert len(data["training"]) == 1 and data["validation"] == [] and len(data["test"]) == 3
    item = data["training"][0]
    assert item["spacing"] == list(SUITE["crowd"].spacing)
    flags = np.array(item["mask_annotated"])
    assert abs(flags.sum() - 0.2 * len(flags)) <= 1
    _, labels = generate_stack([0, 0, 0], SUITE["crowd"].shape, SUITE["crowd"].spacing, SUITE["crowd"].model)
    np.testing.assert_array_equal(read_volume(out / item["gt_instances"]), labels)
    with pytest.raises(KeyError, match="unknown suite dataset"):
        write_suite_dataset("nope", tmp_path / "x")


@pytest.mark.parametrize("seed", [0, 1])
def test_the_face_cut_preset_is_mostly_cut_objects_kept_down_to_three_voxels(tmp_path, seed):
    """Most test objects touch a face (>= 70%), many are cut to <= 9 voxels along a cut axis (>= 25%), every object
    of >= 3 voxels per axis is kept and none thinner; spacing and crop sizes are drawn per seed and volume."""
    from weakseg_monai.data.datalist import load_section
    from weakseg_monai.utils.boxes import touches_face

    write_suite_dataset("face-cut", tmp_path, seed=seed)
    assert validate_dataset(tmp_path).ok
    items = load_section(tmp_path, "test")
    touching, thin, total, shapes = 0, 0, 0, set()
    for item in items:
        boxes = np.asarray(item["box"]).reshape(-1, 6)
        shape = read_volume(item["image"]).shape
        shapes.add(shape)
        extent = boxes[:, 3:] - boxes[:, :3]
        assert (extent >= 3).all(), "no minimum-extent filter beyond 3 voxels per axis"
        on_face = [(boxes[:, a] <= 0) | (boxes[:, 3 + a] >= shape[a]) for a in range(3)]
        touching += int(touches_face(boxes, shape).sum())
        thin += int(np.logical_or.reduce([on_face[a] & (extent[:, a] <= 9) for a in range(3)]).sum())
        total += len(boxes)
    assert touching >= 0.7 * total and thin >= 0.25 * total, (touching, thin, total)
    assert len(shapes) == len(items), "every volume its own crop size"
    assert len(load_section(tmp_path, "training")) == 1
