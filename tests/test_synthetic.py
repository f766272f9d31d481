"""The synthetic HL60-like generator: determinism, statistics, weak-annotation protocol, files on disk."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from weakseg_monai.data.datalist import partial_mask_from_instances, read_datalist, resolve_paths, select_annotated
from weakseg_monai.data.instances import boxes_from_instances
from weakseg_monai.data.io import read_volume
from weakseg_monai.data.synthetic import DEFAULT_SPACING, generate_stack
from weakseg_monai.data.validate import validate_dataset

from .conftest import BUNDLE_DIR, run_cli


@pytest.fixture(scope="module")
def stacks():
    return [generate_stack([7, 0, i]) for i in range(6)]


def test_deterministic_for_a_seed():
    a_img, a_lab = generate_stack([3, 0, 0])
    b_img, b_lab = generate_stack([3, 0, 0])
    c_img, _ = generate_stack([3, 0, 1])
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


def test_instance_statistics(stacks):
    touching_pairs = 0
    border_cut = 0
    for image, labels in stacks:
        assert image.dtype == np.uint16 and image.shape == (128, 128, 32)
        n = int(labels.max())
        assert 10 <= n <= 40
        assert set(np.unique(labels)) == set(range(n + 1)), "labels must be consecutive"
        fill = (labels > 0).mean()
        assert 0.03 < fill < 0.4
        boxes = boxes_from_instances(labels)
        border_cut += int(((boxes[:, :3] == 0) | (boxes[:, 3:] == np.array(labels.shape))).any(axis=1).sum())
        # touching: two different labels face to face along x
        a, b = labels[:-1], labels[1:]
        touching_pairs += int(((a > 0) & (b > 0) & (a != b)).sum())
        # contrast: nuclei stand above the background by several noise standard deviations
        background = image[labels == 0].astype(np.float64)
        assert image[labels > 0].mean() - background.mean() > 3 * background.std()
    assert touching_pairs > 0
    assert border_cut > 0


def test_sizes_are_physical_and_anisotropic(stacks):
    """Nuclei are 7-11 µm (median), and as wide in z as in x once the 2x coarser z spacing is applied."""
    ratios, diameters = [], []
    for _, labels in stacks:
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            ext = np.array([s.stop - s.start for s in sl]) * np.array(DEFAULT_SPACING)
            touches = any(s.start == 0 or s.stop == n for s, n in zip(sl, labels.shape))
            if not touches and (labels[sl] == k).sum() > 200:
                ratios.append(ext[0] / ext[2])
                diameters.append(ext.mean())
    assert 0.7 < np.median(ratios) < 1.4
    assert 6.0 < np.median(diameters) < 12.0


def test_mask_fraction_is_nested_and_within_one_instance():
    for n in (10, 23, 40):
        s10 = select_annotated(n, 0.1, seed=0, key="x")
        s20 = select_annotated(n, 0.2, seed=0, key="x")
        assert abs(s20.sum() - 0.2 * n) <= 1
        assert not (s10 & ~s20).any(), "the 10% set must lie inside the 20% set"
    assert not np.array_equal(select_annotated(40, 0.2, 0, "x"), select_annotated(40, 0.2, 0, "y"))


def test_partial_mask_keeps_only_annotated(stacks):
    _, labels = stacks[0]
    annotated = np.zeros(int(labels.max()), dtype=bool)
    annotated[[0, 3]] = True
    mask = partial_mask_from_instances(labels, annotated)
    assert set(np.unique(mask)) == {0, 1, 4}
    np.testing.assert_array_equal(mask == 4, labels == 4)


def test_written_dataset_is_valid_and_consistent(synthetic_dataset):
    report = validate_dataset(synthetic_dataset)
    assert report.ok, report.format()
    data = read_datalist(synthetic_dataset)
    assert [len(data[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    item = resolve_paths(data["training"][0], synthetic_dataset)
    gt = read_volume(item["gt_instances"])
    mask = read_volume(item["mask"])
    np.testing.assert_array_equal(boxes_from_instances(gt), np.array(item["box"]))
    flags = np.array(item["mask_annotated"])
    assert abs(flags.sum() - 0.2 * len(flags)) <= 1
    for k in np.nonzero(flags)[0]:
        np.testing.assert_array_equal(mask == k + 1, gt == k + 1)
    assert item["spacing"] == list(DEFAULT_SPACING)


def test_cli_synth_with_preview_and_tiff(tmp_path):
    out = tmp_path / "ds"
    result = run_cli(
        "-m",
        "weakseg_monai",
        "synth",
        "--out",
        str(out),
        "--n-train",
        "1",
        "--n-val",
        "0",
        "--n-test",
        "0",
        "--file-format",
        "tif",
        "--preview",
    )
    assert result.returncode == 0, result.stderr
    png = out / "preview.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert (out / "images" / "train_000.tif").is_file()
    check = run_cli("-m", "weakseg_monai", "validate", str(out))
    assert check.returncode == 0, check.stdout


def test_bundle_prepare_data_config_runs(tmp_path):
    """The README's current main job: the bundle config generates and validates the embedded default."""
    result = run_cli(
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(BUNDLE_DIR / "configs" / "prepare_data.json"),
        "--bundle_root",
        str(tmp_path),
        "--n_train",
        "1",
        "--n_val",
        "1",
        "--n_test",
        "0",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = validate_dataset(tmp_path / "data" / "synthetic")
    assert report.ok and report.n_items == 2
