"""Round trips of NIfTI and TIFF volumes in (x, y, z) order, and the spacing rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

from weakseg_monai.conventions import as_flag
from weakseg_monai.data.io import read_volume, resolve_spacing, tiff_spacing, write_volume


def _volume() -> np.ndarray:
    return np.arange(7 * 5 * 3, dtype=np.uint16).reshape(7, 5, 3)  # (x, y, z), all sizes distinct


def test_nifti_round_trip_keeps_xyz_and_header_spacing(tmp_path):
    path = write_volume(tmp_path / "v.nii.gz", _volume(), (0.5, 0.25, 2.0))
    back = read_volume(path)
    assert back.shape == (7, 5, 3)
    np.testing.assert_array_equal(back, _volume())
    assert resolve_spacing(path) == (0.5, 0.25, 2.0)


def test_tiff_is_stored_zyx_and_read_back_xyz(tmp_path):
    path = write_volume(tmp_path / "v.tif", _volume(), (0.125, 0.25, 0.2))
    stored = tifffile.imread(path)
    assert stored.shape == (3, 5, 7)  # z, y, x on disk
    np.testing.assert_array_equal(stored, _volume().transpose(2, 1, 0))
    back = read_volume(path)  # MONAI's LoadImage turns it into (x, y, z) itself
    np.testing.assert_array_equal(back, _volume())
    assert resolve_spacing(path) == pytest.approx((0.125, 0.25, 0.2))


def test_ome_tiff_spacing(tmp_path):
    path = tmp_path / "v.ome.tif"
    tifffile.imwrite(
        path,
        _volume().transpose(2, 1, 0),
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.4, "PhysicalSizeZ": 1.5},
    )
    assert tiff_spacing(path) == pytest.approx((0.3, 0.4, 1.5))


def test_spacing_rule_order_and_fallback_warning(tmp_path, caplog):
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, _volume().transpose(2, 1, 0), photometric="minisblack")
    with caplog.at_level(logging.WARNING):
        assert resolve_spacing(bare) == (1.0, 1.0, 1.0)
    assert "assuming 1 x 1 x 1" in caplog.text
    nifti = write_volume(tmp_path / "v.nii.gz", _volume(), (0.5, 0.5, 2.0))
    assert resolve_spacing(nifti, datalist_spacing=[0.1, 0.2, 0.3]) == (0.1, 0.2, 0.3)


def test_read_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(OSError, match="cannot be read"):
        read_volume(bad)
    with pytest.raises(ValueError, match="unsupported format"):
        write_volume(tmp_path / "v.png", _volume())
    with pytest.raises(ValueError, match="3D"):
        write_volume(tmp_path / "v.nii.gz", np.zeros((4, 4)))


def test_fast_tiff_reader_matches_monai_loadimage(tmp_path):
    from monai.transforms import LoadImage

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4000, size=(5, 9, 13), dtype=np.uint16)  # stored (z, y, x)
    tifffile.imwrite(tmp_path / "s.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    ours = read_volume(tmp_path / "s.tif")
    monai = np.asarray(LoadImage(image_only=True, dtype=None)(str(tmp_path / "s.tif")))
    assert ours.shape == monai.shape == (13, 9, 5)
    np.testing.assert_array_equal(ours, monai)


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_any_memory_order_and_label_dtype_round_trips(tmp_path, suffix, dtype):
    """The predictor hands over Fortran-ordered (x, y, z) label volumes; the bytes on disk must not change."""
    fortran = np.asfortranarray(_volume().astype(dtype))
    assert not fortran.flags.c_contiguous
    back = read_volume(write_volume(tmp_path / f"f{suffix}", fortran, (0.5, 0.5, 1.0)))
    np.testing.assert_array_equal(back, _volume())
    if suffix == ".tif":
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "f.tif"), _volume().transpose(2, 1, 0))


def test_ome_physical_size_units_are_honoured(tmp_path):
    path = tmp_path / "nm.ome.tif"
    metadata = {
        "axes": "ZYX",
        "PhysicalSizeX": 500,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.5,
        "PhysicalSizeYUnit": "µm",
        "PhysicalSizeZ": 0.001,
        "PhysicalSizeZUnit": "mm",
    }
    tifffile.imwrite(str(path), np.zeros((4, 8, 8), dtype=np.uint16), ome=True, metadata=metadata)
    assert tiff_spacing(path) == pytest.approx((0.5, 0.5, 1.0))
    bad = tmp_path / "furlong.ome.tif"
    tifffile.imwrite(str(bad), np.zeros((4, 8, 8), dtype=np.uint16), ome=True,
                     metadata=dict(metadata, PhysicalSizeXUnit="furlong"))
    with pytest.raises(ValueError, match="furlong.ome.tif.*unit 'furlong'"):
        tiff_spacing(bad)


def test_an_absurd_spacing_is_refused_before_any_allocation():
    import torch

    from weakseg_monai.inference import WeakSegPredictor
    from weakseg_monai.networks import MaskBranch, VoxResDetectorNet, WeakInstanceSegNet

    branch = MaskBranch(roi_size=4, mask_channels=8)
    small = WeakInstanceSegNet(VoxResDetectorNet(channels=(8, 8, 8)), mask_branch=branch)
    predictor = WeakSegPredictor(small)
    with pytest.raises(ValueError, match=r"spacing \(500.0, 500.0, 1.0\) µm looks wrong.*--spacing"):
        predictor(torch.zeros(1, 64, 64, 16), (500.0, 500.0, 1.0))


def test_truncated_and_multichannel_tiffs_say_what_is_wrong(tmp_path):
    full = tmp_path / "full.tif"
    tifffile.imwrite(str(full), np.zeros((8, 16, 16), dtype=np.uint16), imagej=True, metadata={"axes": "ZYX"})
    data = full.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(OSError, match="cut.tif: truncated.*announces 8 pages but the file holds 1"):
        read_volume(tmp_path / "cut.tif")
    zcyx = tmp_path / "zcyx.tif"
    tifffile.imwrite(str(zcyx), np.zeros((4, 2, 16, 16), dtype=np.uint16), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(ValueError, match=r"zcyx.tif: TIFF axes ZCYX .*2 along C.*nuclear channel"):
        read_volume(zcyx)


@pytest.mark.parametrize("shape, spacing", [((1, 128, 32), (1.0, 1.0, 1.0)), ((2, 700, 80), (0.1, 0.1, 5.0))])
def test_the_preview_of_a_thin_volume_stays_small(tmp_path, shape, spacing):
    from PIL import Image

    from weakseg_monai.data.preview import save_preview

    path = save_preview(tmp_path / "p.png", np.random.rand(*shape), np.zeros(shape, np.int32), spacing, "thin")
    width, height = Image.open(path).size
    assert width <= 1000 and height <= 2500


def test_yes_no_options_read_the_words_the_command_line_passes():
    assert as_flag("false", "preview") is False and as_flag(" True ", "preview") is True
    assert as_flag(0, "preview") is False and as_flag(True, "preview") is True
    with pytest.raises(ValueError, match="preview must be true or false, got 'maybe'"):
        as_flag("maybe", "preview")
