"""Reliability round 3: inputs and faults that used to give a silently wrong result, a hang or a useless last line.
Each test runs the real command or component on real files."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from .conftest import BUNDLE_DIR, run_cli

SAMPLE = BUNDLE_DIR / "sample" / "sample_000.nii.gz"
INFERENCE = ["-m", "monai.bundle", "run", "--config_file", str(BUNDLE_DIR / "configs" / "inference.json"),
             "--bundle_root", str(BUNDLE_DIR)]


def _sample_variant(path, dtype: str, value: float, patch: bool) -> None:
    src = nib.load(str(SAMPLE))
    array = np.asarray(src.dataobj).astype(dtype)
    if patch:
        array[60:63, 60:63, 16] = value
    else:
        array[60, 60, 16] = value
    nib.save(nib.Nifti1Image(array, src.affine), str(path))


def test_a_few_bright_voxels_do_not_wipe_out_the_detections_and_the_warning_says_what_was_measured(tmp_path):
    """The shipped sample (26 nuclei; the model finds 27) with a 3 x 3 patch of 65535 (uint16) or one float64 voxel
    of 1e300: before, 1 and 0 instances with a warning that blamed the spacing (the huge normalised values swamped
    the network's group-norm statistics; 1e300 became inf in float32). Now as many as on the plain sample."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    _sample_variant(inputs / "patch.nii.gz", "uint16", 65535, patch=True)
    _sample_variant(inputs / "huge.nii.gz", "float64", 1e300, patch=False)
    shutil.copy(SAMPLE, inputs / "plain.nii.gz")
    result = run_cli(*INFERENCE, "--input_dir", str(inputs), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    found = {n: len(json.loads((tmp_path / "out" / f"{n}_boxes.json").read_text())["boxes"]) for n in
             ("plain", "patch", "huge")}
    assert found["plain"] >= 26 and found["patch"] == found["huge"] == found["plain"], found
    log = result.stdout + result.stderr
    assert "9 voxel(s) lie far above the bulk" in log and "99.8th percentile is 187" in log
    assert "check its spacing" not in log


def _checkpoint_variants(folder):
    import torch

    shipped = torch.load(BUNDLE_DIR / "models" / "model.pt", weights_only=True)
    nan = dict(shipped, **{"selector.score_thresh": torch.tensor(float("nan"))})
    weight = next(k for k, v in shipped.items() if v.ndim == 5)
    wrong_shape = dict(shipped, **{weight: torch.zeros(2, 1, 3, 3, 3)})

    class Evil:
        def __reduce__(self):
            return (print, ("not run",))

    files = {"nan": nan, "tensor": torch.zeros(3), "keys": {"foo": torch.zeros(3)}, "shape": wrong_shape,
             "evil": {"x": Evil()}}
    for name, obj in files.items():
        torch.save(obj, folder / f"{name}.pt")
    (folder / "corrupt.pt").write_bytes(b"definitely not a checkpoint" * 10)
    (folder / "truncated.pt").write_bytes((BUNDLE_DIR / "models" / "model.pt").read_bytes()[:5000])
    return {
        "nan": "tensor 'selector.score_thresh' holds NaN or inf",
        "tensor": "holds Tensor, not a state dict",
        "keys": "does not fit WeakInstanceSegNet",
        "shape": "size mismatch",
        "evil": "refused for safety",
        "corrupt": "corrupt, truncated or not a PyTorch file",
        "truncated": "corrupt, truncated or not a PyTorch file",
    }


def test_a_broken_foreign_or_nan_checkpoint_is_refused_naming_the_file(tmp_path):
    """Before: NaN weights ran and found 0 objects; the others ended on torch's text (no file named; for a corrupt
    file a suggestion to load with weights_only=False)."""
    from weakseg_monai.engines import checked_checkpoint
    from weakseg_monai.networks import WeakInstanceSegNet

    network = WeakInstanceSegNet()
    for name, expected in _checkpoint_variants(tmp_path).items():
        with pytest.raises(ValueError) as err:
            checked_checkpoint(tmp_path / f"{name}.pt", network)
        assert str(tmp_path / f"{name}.pt") in str(err.value) and expected in str(err.value), name
        assert "weights_only" not in str(err.value)
    assert checked_checkpoint(BUNDLE_DIR / "models" / "model.pt", network).endswith("model.pt")
    result = run_cli(*INFERENCE, "--output_dir", str(tmp_path / "out"), "--ckpt_path", str(tmp_path / "nan.pt"))
    assert result.returncode != 0 and "nan.pt: tensor 'selector.score_thresh'" in result.stderr.strip().splitlines()[-1]


def test_score_picks_our_prediction_files_and_refuses_an_ambiguous_folder(tmp_path):
    """Item 1: a folder with both sample_000.nii.gz (the image) and sample_000_instances.nii.gz scored the image
    (Det F1 0, 137 'instances') or the prediction by directory order."""

    from weakseg_monai.metrics.scoring import score_folders

    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(SAMPLE, pred / "sample_000.nii.gz")
    shutil.copy(BUNDLE_DIR / "sample_gt" / "sample_000_gt.nii.gz", pred / "sample_000_instances.nii.gz")
    assert score_folders(BUNDLE_DIR / "sample_gt", pred)["mean"]["det_f1"] == 1.0
    from weakseg_monai.data.io import read_volume, write_volume

    write_volume(pred / "sample_000_instances.tif", read_volume(pred / "sample_000_instances.nii.gz"))
    with pytest.raises(ValueError, match="more than one prediction of the same volume"):
        score_folders(BUNDLE_DIR / "sample_gt", pred)
    result = run_cli("-m", "weakseg_monai", "score", "--gt", str(BUNDLE_DIR / "sample_gt"), "--pred", str(pred))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "sample_000_instances.nii.gz and sample_000_instances.tif" in result.stderr


def test_to_ctc_refuses_two_predictions_of_a_frame_ignores_hidden_files_and_rewrites_its_folder(tmp_path):
    """Item 2: a second prediction of frame 0 overwrote mask000 with zeros (exit 0); a rerun kept old masks beside a
    new res_track.txt; hidden .tmp_PID_* files were read as frames."""
    from weakseg_monai.data.ctc import to_ctc
    from weakseg_monai.data.io import read_volume, write_volume

    gt = read_volume(BUNDLE_DIR / "sample_gt" / "sample_000_gt.nii.gz")
    pred = tmp_path / "pred"
    for t in range(3):
        write_volume(pred / f"a_t{t:03d}_instances.nii.gz", gt)
    (pred / ".tmp_123_a_t009_instances.nii.gz").write_bytes(b"")
    res = to_ctc(pred, tmp_path / "out")
    assert sorted(p.name for p in res.glob("mask*.tif")) == ["mask000.tif", "mask001.tif", "mask002.tif"]
    for t in (1, 2):
        (pred / f"a_t{t:03d}_instances.nii.gz").unlink()
    to_ctc(pred, tmp_path / "out")
    assert sorted(p.name for p in res.glob("mask*.tif")) == ["mask000.tif"], "no stale masks beside the new track file"
    assert len((res / "res_track.txt").read_text().splitlines()) == int(gt.max())
    write_volume(pred / "b_t000_instances.nii.gz", gt)
    with pytest.raises(ValueError, match="several predictions of one frame"):
        to_ctc(pred, tmp_path / "out")
    (pred / "b_t000_instances.nii.gz").write_bytes(b"")
    (pred / "a_t000_instances.nii.gz").unlink()
    result = run_cli("-m", "weakseg_monai", "to-ctc", "--pred", str(pred), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "Traceback" not in result.stderr and "b_t000_instances" in result.stderr


@pytest.mark.parametrize("flag, value", [("--block_size", "[0,0,0]"), ("--block_size", "[-8,-8,-8]"),
                                         ("--max_whole_voxels", "abc"), ("--sw_overlap", "1.5")])
def test_inference_sizes_are_checked_up_front_naming_the_flag(tmp_path, flag, value):
    """Item 5: --block_size [0,0,0] planned 524288 blocks of <= [1, 1, 1] and hung."""
    result = run_cli(*INFERENCE, "--output_dir", str(tmp_path), flag, value)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"weakseg-monai error: ValueError: {flag} must be")


def test_duplicate_boxes_are_warned_about_and_left_out_of_the_plan(tiny_dataset):
    """Item 6: a duplicated box passed validate silently and raised box_overlap_p95 from 0.15 to 1.0 (NMS 0.3->0.6)."""
    from weakseg_monai.data.datalist import read_datalist, write_datalist
    from weakseg_monai.data.validate import validate_dataset
    from weakseg_monai.planning import TrainingPlanner

    before = TrainingPlanner(tiny_dataset).planned()
    data = read_datalist(tiny_dataset)
    item = data["training"][0]
    item["box"].append(list(item["box"][1]))
    item["label"].append(0)
    item["mask_annotated"].append(False)
    write_datalist(tiny_dataset, data)
    report = validate_dataset(tiny_dataset)
    assert report.ok and any("IoU >= 0.95" in p.message for p in report.warnings)
    after = TrainingPlanner(tiny_dataset)
    assert after.fingerprint.n_objects == 2 and after.planned()["nms_thresh"] == before["nms_thresh"]


@pytest.mark.parametrize("args, flag", [
    (["budget", "{data}", "--mask-fraction", "-0.5"], "--mask-fraction"),
    (["budget", "{data}", "--mask-fraction", "5"], "--mask-fraction"),
    (["budget", "{data}", "--mask-fraction", "abc"], "--mask-fraction"),
    (["synth", "--out", "{tmp}/a", "--n-train", "-1"], "--n-train"),
    (["synth", "--out", "{tmp}/b", "--shape", "(0,0,0)"], "--shape"),
    (["synth", "--out", "{tmp}/c", "--shape", "(48,48)"], "--shape"),
])
def test_impossible_numbers_are_refused_in_one_line_naming_the_flag(tiny_dataset, tmp_path, args, flag):
    """Items 7 and 16: '-223 units', '500% masks', an empty datalist, numpy's 'string multiply' error, 'zero-size
    array' and 'could not be broadcast' tracebacks."""
    filled = [a.format(data=tiny_dataset, tmp=tmp_path) for a in args]
    result = run_cli("-m", "weakseg_monai", *filled)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr and f"error: {flag} must be" in result.stderr
    assert not (tmp_path / "a" / "datalist.json").exists()
    debug = run_cli("-m", "weakseg_monai", *filled, "--debug")
    assert "Traceback" in debug.stderr, "--debug shows the traceback"


def test_one_bad_input_does_not_stop_the_folder_and_the_last_lines_name_it(tmp_path):
    """Item 8: a file whose header says 1e6 µm ended the run with 'applying transform <...ToWorkingGridd object at
    0x...>' and the good file was never processed."""

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLE, inputs / "good.nii.gz")
    src = nib.load(str(SAMPLE))
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj), np.diag([1e6, 1e6, 1e6, 1])), str(inputs / "bad.nii.gz"))
    result = run_cli(*INFERENCE, "--input_dir", str(inputs), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 1
    assert (tmp_path / "out" / "good_instances.nii.gz").is_file()
    tail = "\n".join(result.stderr.strip().splitlines()[-5:])
    assert "1 of 2 inputs failed (the others were written):" in tail
    assert f"| {inputs / 'bad.nii.gz'} | FAILED: spacing" in tail
    assert "applying transform" not in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("value", ["[a,b,c]", "0.5", "[1,2]"])
def test_a_bad_spacing_flag_is_named(tmp_path, value):
    """Item 9: --spacing "[a,b,c]" blamed the image file; --spacing 0.5 said "'float' object is not iterable"."""
    result = run_cli(*INFERENCE, "--output_dir", str(tmp_path), "--spacing", value)
    assert result.returncode != 0 and "--spacing must be three positive numbers" in result.stderr.splitlines()[-1]


def test_folders_named_by_a_number_work(tmp_path):
    """Item 10: --input_dir 2024 / --output_dir 1 / to-ctc --out 7 ended in 'expected str, bytes or os.PathLike
    object, not int' (the command line turns the name into an int)."""

    (tmp_path / "2024").mkdir()
    shutil.copy(SAMPLE, tmp_path / "2024" / "sample_000.nii.gz")
    result = run_cli(*INFERENCE, "--input_dir", "2024", "--output_dir", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "1" / "sample_000_instances.nii.gz").is_file()
    (tmp_path / "1" / "sample_000_instances.nii.gz").rename(tmp_path / "1" / "sample_t000_instances.nii.gz")
    ctc = run_cli("-m", "weakseg_monai", "to-ctc", "--pred", "1", "--out", "7", cwd=tmp_path)
    assert ctc.returncode == 0, ctc.stderr[-2000:]
    assert (tmp_path / "7" / "01_RES" / "mask000.tif").is_file()


def test_invalid_header_spacings_are_missing_axis_by_axis(tmp_path, caplog):
    """Item 12: a NIfTI with pixdim z = 0 got nibabel's unnamed "setting 0 dims to 1" (39 instances instead of the
    sample's 26-27 when all became 1); an ImageJ TIFF with z spacing 0 or -1 lost its valid x / y too (63 instances)."""
    import tifffile

    from weakseg_monai.data.io import resolve_spacing

    src = nib.load(str(SAMPLE))
    image = nib.Nifti1Image(np.asarray(src.dataobj), None)
    image.header.set_zooms((0.5, 0.5, 0.0))
    nib.save(image, str(tmp_path / "z0.nii.gz"))
    assert resolve_spacing(tmp_path / "z0.nii.gz") == (0.5, 0.5, 1.0)
    array = np.asarray(src.dataobj).astype(np.uint16)
    for z in (0, -1):
        path = tmp_path / f"z{z}.tif"
        tifffile.imwrite(str(path), array.transpose(2, 1, 0), imagej=True, resolution=(2.0, 2.0),
                         metadata={"spacing": z, "unit": "um", "axes": "ZYX"})
        assert resolve_spacing(path) == (0.5, 0.5, 1.0)
    assert "no valid voxel size for z" in caplog.text and "z0.nii.gz" in caplog.text
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(tmp_path / "z0.nii.gz", inputs / "z0.nii.gz")
    shutil.copy(SAMPLE, inputs / "plain.nii.gz")
    result = run_cli(*INFERENCE, "--input_dir", str(inputs), "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 0 and "setting 0 dims to 1" not in result.stdout + result.stderr
    found = {n: len(json.loads((tmp_path / "o" / f"{n}_boxes.json").read_text())["boxes"]) for n in ("z0", "plain")}
    assert found["z0"] == found["plain"] >= 26, found


def test_a_folder_of_earlier_predictions_only_says_so(tmp_path):
    """Item 13: "no NIfTI or TIFF files" although files were there."""

    shutil.copy(SAMPLE, tmp_path / "sample_000_instances.nii.gz")
    result = run_cli(*INFERENCE, "--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"))
    assert result.returncode != 0 and "holds only earlier predictions" in result.stderr.splitlines()[-1]


def test_a_label_the_one_class_model_cannot_have_is_caught_by_validate_and_plan(tiny_dataset):
    """Item 14: label 7 passed validate and training failed with 'IndexError: Target 8 is out of bounds'."""
    from weakseg_monai.data.datalist import read_datalist, write_datalist

    data = read_datalist(tiny_dataset)
    data["training"][0]["label"] = [0, 7]
    write_datalist(tiny_dataset, data)
    for command in (["validate", str(tiny_dataset)], ["plan", str(tiny_dataset)]):
        result = run_cli("-m", "weakseg_monai", *command)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "label 7 implies 8 object classes, but the model has 1" in result.stdout + result.stderr


@pytest.mark.parametrize("flag, value", [("--iterations", "0"), ("--val_interval", "0")])
def test_training_flags_are_checked_naming_them(tiny_dataset, tmp_path, flag, value):
    """Item 15: 'Argument max_epochs is invalid', ZeroDivisionError."""
    result = run_cli("-m", "monai.bundle", "run", "--config_file", str(BUNDLE_DIR / "configs" / "train.json"),
                     "--bundle_root", str(BUNDLE_DIR), "--dataset_dir", str(tiny_dataset), "--output_dir",
                     str(tmp_path), "--ckpt_dir", str(tmp_path / "m"), flag, value)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"weakseg-monai error: ValueError: {flag} must be a whole number >= 1, got 0"


def test_evaluating_an_empty_section_is_an_error_naming_it(tiny_dataset, tmp_path):
    """Item 15: an empty 'test' section exited 0 with no metrics.json and MONAI's 'dataloader is empty'."""
    result = run_cli("-m", "monai.bundle", "run", "--config_file",
                     f"['{BUNDLE_DIR / 'configs' / 'train.json'}','{BUNDLE_DIR / 'configs' / 'evaluate.json'}']",
                     "--bundle_root", str(BUNDLE_DIR), "--dataset_dir", str(tiny_dataset), "--output_dir",
                     str(tmp_path), "--ckpt_dir", str(BUNDLE_DIR / "models"))
    assert result.returncode != 0 and "the 'test' section is empty" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "metrics.json").exists()
