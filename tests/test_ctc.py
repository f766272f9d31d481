"""CTC converter (both ways), our CTC SEG / DET against the official py-ctcmetrics, budget and score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from weakseg_monai.data.budget import annotation_budget
from weakseg_monai.data.ctc import from_ctc, to_ctc
from weakseg_monai.data.datalist import read_datalist, write_datalist
from weakseg_monai.data.io import read_volume, write_volume
from weakseg_monai.data.validate import validate_dataset
from weakseg_monai.metrics import ctc_det, ctc_seg

from .conftest import run_cli


def _frame_labels(t: int, shape=(24, 20, 6)) -> np.ndarray:
    """A few cubes with CTC-style arbitrary label values."""
    labels = np.zeros(shape, dtype=np.uint16)
    for k in range(2 + t % 3):
        x = 2 + 6 * k
        labels[x : x + 4, 3:8, 1:4] = 17 * (k + 1) + t  # arbitrary, non-consecutive values
    return labels


def _fake_ctc(root, frames=None):
    frames = frames or {"01": range(150), "02": range(80)}
    for seq, ts in frames.items():
        for t in ts:
            labels = _frame_labels(t)
            image = (100 + 400 * (labels > 0)).astype(np.uint16)
            write_volume(root / seq / f"t{t:03d}.tif", image, (0.125, 0.125, 0.2))
            write_volume(root / f"{seq}_GT" / "SEG" / f"man_seg{t:03d}.tif", labels, (0.125, 0.125, 0.2))


def test_from_ctc_cli_uses_the_papers_split(tmp_path):
    root, out = tmp_path / "Fluo-N3DH-SIM+", tmp_path / "converted"
    _fake_ctc(root)
    result = run_cli(
        "-m",
        "weakseg_monai",
        "from-ctc",
        "--root",
        str(root),
        "--out",
        str(out),
        "--mask-fraction",
        "0.5",
        "--seed",
        "0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = read_datalist(out)
    assert [i["id"] for i in data["training"]] == [f"01_t{t:03d}" for t in range(0, 71, 10)] + [
        f"02_t{t:03d}" for t in range(0, 41, 10)
    ]
    assert len(data["test"]) == 100 and data["test"][0]["id"] == "01_t080" and data["test"][-1]["id"] == "02_t079"
    item = data["training"][1]  # 01_t010: 3 cubes
    assert item["spacing"] == [0.125, 0.125, 0.2] and item["box"][0] == [2, 3, 1, 6, 8, 4]
    gt = read_volume(out / item["gt_instances"])
    assert sorted(np.unique(gt)) == [0, 1, 2, 3]  # relabelled consecutively in box order
    report = validate_dataset(out, read_volumes=True)
    assert report.ok, report.format()


def test_from_ctc_reports_missing_files(tmp_path):
    _fake_ctc(tmp_path / "r", {"01": range(5)})
    with pytest.raises(FileNotFoundError, match="CTC files missing"):
        from_ctc(tmp_path / "r", tmp_path / "o")


def test_our_seg_and_det_match_py_ctcmetrics(tmp_path):
    ctc_metrics = pytest.importorskip("ctc_metrics", reason="py-ctcmetrics is part of the test extra")
    gt_dir, pred_dir, res_root = tmp_path / "01_GT", tmp_path / "pred", tmp_path / "res"
    rng = np.random.default_rng(0)
    seg_num = seg_den = aogm = aogm0 = 0.0
    track_lines, offset = [], 0
    for t in range(3):
        gt = _frame_labels(t).astype(np.int64)
        gt = np.where(gt > 0, np.unique(gt, return_inverse=True)[1].reshape(gt.shape), 0)  # 1..n
        pred = np.roll(gt, rng.integers(0, 3), axis=0)  # shifted: partial overlaps
        pred[20:23, 12:16, 1:3] = 9  # a false positive
        if t == 1:
            pred[pred == 2] = 1  # a merge: one result covers two references
        unique_gt = np.where(gt > 0, gt + offset, 0)
        write_volume(gt_dir / "SEG" / f"man_seg{t:03d}.tif", unique_gt.astype(np.uint16))
        write_volume(gt_dir / "TRA" / f"man_track{t:03d}.tif", unique_gt.astype(np.uint16))
        track_lines += [f"{offset + k} {t} {t} 0" for k in range(1, int(gt.max()) + 1)]
        offset += int(gt.max())
        write_volume(pred_dir / f"t{t:03d}_instances.tif", pred.astype(np.uint16))
        n_ref = int(gt.max())
        seg_num += ctc_seg(gt, pred) * n_ref
        seg_den += n_ref
        det = ctc_det(gt, pred)
        aogm += det["aogm_d"]
        aogm0 += 10 * n_ref
    (gt_dir / "TRA" / "man_track.txt").write_text("\n".join(track_lines) + "\n")
    res = to_ctc(pred_dir, res_root, "01")
    assert sorted(p.name for p in res.iterdir()) == ["mask000.tif", "mask001.tif", "mask002.tif", "res_track.txt"]
    official = ctc_metrics.evaluate_sequence(str(res), str(gt_dir), ["SEG", "DET"], threads=1)
    assert official["SEG"] == pytest.approx(seg_num / seg_den, abs=1e-6)
    assert official["DET"] == pytest.approx(1 - min(aogm, aogm0) / aogm0, abs=1e-6)


def test_budget_matches_the_papers_arithmetic(tmp_path):
    items = [{"id": f"s{i}", "image": "x.nii.gz", "box": [[0, 0, 0, 1, 1, 1]] * 20} for i in range(13)]
    write_datalist(tmp_path, {"training": items})
    b = annotation_budget(tmp_path, mask_fraction=0.2)
    assert b["weak_cost"] == 13 * (20 * 1 + 4 * 30)
    assert b["full_cost"] == 13 * 20 * 30
    assert b["matched_k"] == 4  # the paper's "VoxResNet (4/13)"
    result = run_cli("-m", "weakseg_monai", "budget", str(tmp_path), "--mask-fraction", "0.2")
    assert result.returncode == 0 and "first 4 of 13 stacks" in result.stdout


def test_score_cli_prints_a_table_and_writes_json(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for name in ("a", "b"):
        labels = _frame_labels(1 if name == "a" else 2)
        write_volume(gt_dir / f"{name}.nii.gz", labels)
        write_volume(pred_dir / f"{name}_instances.nii.gz", labels)
    result = run_cli(
        "-m",
        "weakseg_monai",
        "score",
        "--gt",
        str(gt_dir),
        "--pred",
        str(pred_dir),
        "--out",
        str(tmp_path / "scores.json"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| mean | 1.0000 | 1.0000 |" in result.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["mean"]["ctc_seg"] == 1.0 and len(scores["items"]) == 2
    default = run_cli("-m", "weakseg_monai", "score", "--gt", str(gt_dir), "--pred", str(pred_dir))
    assert default.returncode == 0 and (pred_dir / "scores.json").is_file()
