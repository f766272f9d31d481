"""The validator catches each bad-input case with the item, the field and a clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from weakseg_monai.data.datalist import read_datalist, write_datalist
from weakseg_monai.data.io import write_volume
from weakseg_monai.data.validate import DatasetError, check_dataset, validate_dataset

from .conftest import make_tiny_item, run_cli


def _edit(dataset, change) -> None:
    data = read_datalist(dataset)
    change(data["training"][0])
    write_datalist(dataset, data)


def _errors(dataset) -> list[str]:
    return [str(p) for p in validate_dataset(dataset).errors]


def test_valid_dataset_passes(tiny_dataset):
    report = validate_dataset(tiny_dataset)
    assert report.ok, report.format()
    assert report.n_items == 1


def _set_field(key, value):
    return lambda item: item.__setitem__(key, value)


@pytest.mark.parametrize(
    "change, field, text",
    [
        (_set_field("image", "nope.nii.gz"), "image", "missing or unreadable"),
        (_set_field("box", [[2, 3, 1, 8, 9, 4], [12, 10, 3, 30, 16, 7]]), "box", "outside the image"),
        (_set_field("box", [[2, 3, 1, 8, 9, 4], [12, 10, 3, 12, 16, 7]]), "box", "non-positive size"),
        (_set_field("box", [[2, 3, 1, 8, 9], [12, 10, 3, 20, 16, 7]]), "box", "6 numbers"),
        (_set_field("label", [0]), "label", "1 labels for 2 boxes"),
        (_set_field("mask_annotated", [True]), "mask_annotated", "1 flags for 2 boxes"),
        (_set_field("mask_annotated", [True, True]), "mask_annotated", "flagged but has no voxels"),
        (_set_field("mask_annotated", [False, False]), "mask", "mask_annotated[0] is false"),
        (_set_field("box", [[2, 3, 1, 6, 9, 4], [12, 10, 3, 20, 16, 7]]), "mask", "outside its box"),
        (_set_field("spacing", [0.5, 0, 1]), "spacing", "positive"),
    ],
)
def test_each_bad_field_is_reported(tiny_dataset, change, field, text):
    _edit(tiny_dataset, change)
    errors = _errors(tiny_dataset)
    assert any(f"field '{field}'" in e and text in e and "id=a" in e for e in errors), errors


def test_unreadable_wrong_ndim_and_nan_images(tiny_dataset):
    (tiny_dataset / "garbage.nii.gz").write_bytes(b"\x00not an image")
    write_volume(tiny_dataset / "nan.nii.gz", np.full((24, 20, 8), np.nan, dtype=np.float32))
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((24, 20), dtype=np.float32), np.eye(4)), str(tiny_dataset / "flat.nii.gz"))
    for name, text in (("garbage.nii.gz", "cannot be read"), ("flat.nii.gz", "3D"), ("nan.nii.gz", "NaN or inf")):
        _edit(tiny_dataset, _set_field("image", name))
        errors = _errors(tiny_dataset)
        assert any("field 'image'" in e and text in e and name in e for e in errors), (name, errors)


def test_mask_shape_mismatch_and_duplicate_ids(tmp_path):
    items = [make_tiny_item(tmp_path, "a"), make_tiny_item(tmp_path, "b")]
    items[1]["id"] = "a"
    write_volume(tmp_path / "small_mask.nii.gz", np.zeros((4, 4, 4), dtype=np.uint16))
    items[0]["mask"] = "small_mask.nii.gz"
    write_datalist(tmp_path, {"training": items})
    errors = _errors(tmp_path)
    assert any("field 'mask'" in e and "differs from the image" in e for e in errors), errors
    assert any("field 'id'" in e and "used by 2 items" in e for e in errors), errors


def test_zero_annotated_masks_is_a_warning_not_an_error(tiny_dataset):
    def drop_masks(item):
        item["mask_annotated"] = [False, False]
        del item["mask"]

    _edit(tiny_dataset, drop_masks)
    report = validate_dataset(tiny_dataset)
    assert report.ok, report.format()
    assert any("zero annotated masks" in str(w) for w in report.warnings)


def test_check_dataset_raises_with_the_same_message(tiny_dataset):
    _edit(tiny_dataset, _set_field("label", [0]))
    with pytest.raises(DatasetError, match="1 labels for 2 boxes"):
        check_dataset(tiny_dataset)


def test_invalid_json_is_reported(tmp_path):
    (tmp_path / "datalist.json").write_text("{not json")
    assert any("not valid JSON" in e for e in _errors(tmp_path))


def test_cli_exit_codes(tiny_dataset):
    good = run_cli("-m", "weakseg_monai", "validate", str(tiny_dataset))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "0 errors" in good.stdout
    data = json.loads((tiny_dataset / "datalist.json").read_text())
    data["training"][0]["box"][1] = [12, 10, 3, 30, 16, 7]
    (tiny_dataset / "datalist.json").write_text(json.dumps(data))
    bad = run_cli("-m", "weakseg_monai", "validate", str(tiny_dataset))
    assert bad.returncode == 1
    assert "outside the image" in bad.stdout


@pytest.mark.parametrize(
    "raw, field, text",
    [
        ("train_000.nii.gz", "item", "expected a JSON object"),
        ({"image": "a_img.nii.gz", "box": [[2, 3, 1, 8, 9, 4]], "label": 0}, "label", "got 0; expected a list"),
        ({"image": "a_img.nii.gz", "box": [[2, 3, 1, 8, 9, 4]], "mask_annotated": True}, "mask_annotated", "got True"),
        ({"image": 7, "box": []}, "image", "got 7; expected a path"),
        ({"image": "a_img.nii.gz", "box": [["2", 3, 1, 8, 9, 4]]}, "box", "[0][0] got '2'"),
        ({"image": "a_img.nii.gz", "box": [], "spacing": "0.5,0.5,1"}, "spacing", "got '0.5,0.5,1'; expected 3"),
        ({"box": []}, "image", "missing"),
    ],
)
def test_malformed_structure_is_reported_without_traceback(tiny_dataset, raw, field, text):
    data = read_datalist(tiny_dataset)
    data["training"].append(raw)
    write_datalist(tiny_dataset, data)
    errors = [p for p in validate_dataset(tiny_dataset).errors if p.where.startswith("training[1]")]
    assert [p.field for p in errors] == [field], errors
    assert text in errors[0].message and errors[0].file.endswith("datalist.json")


def test_a_datalist_without_training_items_is_refused_by_training(tmp_path):
    write_datalist(tmp_path, {"test": [make_tiny_item(tmp_path)]})
    assert validate_dataset(tmp_path).ok, "fine for evaluation"
    with pytest.raises(DatasetError, match="no training items.*a training run needs some"):
        check_dataset(tmp_path, require_training=True)
