"""Training-run handlers on real Ignite engines: the always-usable model files, score calibration, and the
inference spacing override."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
import torch
from ignite.engine import Engine, Events

from weakseg_monai.engines.handlers import (
    FINAL_MODEL_FILE,
    MODEL_FILE,
    ModelSaver,
    ScoreThresholdCalibrator,
    save_atomic,
    threshold_counts,
)
from weakseg_monai.inference import WeakSegPredictor, run_inference
from weakseg_monai.networks import MaskBranch, VoxResDetectorNet, WeakInstanceSegNet


def _evaluator_reporting(values: list[float]) -> Engine:
    """An evaluator whose successive runs report the given ``val_det_f1`` values."""
    runs = iter(values)
    engine = Engine(lambda e, b: None)

    def report(e: Engine) -> None:
        e.state.metrics["val_det_f1"] = next(runs)

    engine.add_event_handler(Events.EPOCH_COMPLETED, report)
    return engine


def _small_model() -> WeakInstanceSegNet:
    branch = MaskBranch(roi_size=4, mask_channels=8)
    return WeakInstanceSegNet(VoxResDetectorNet(channels=(8, 8, 8)), mask_branch=branch)


@pytest.mark.parametrize(
    "validation, model_is_final",
    [([], True), ([0.0, 0.0], True), ([0.2, 0.6, 0.4], False)],
    ids=["no validation", "validation never finds anything", "validation improves"],
)
def test_a_run_always_leaves_model_pt_and_model_final_pt(tmp_path, validation, model_is_final):
    model = _small_model()
    saver = ModelSaver(model, tmp_path)
    evaluator = _evaluator_reporting(validation)
    saver.attach_evaluator(evaluator)
    trainer = Engine(lambda e, b: None)
    saver.attach(trainer)
    best_state = None
    for value in validation:
        with torch.no_grad():
            model.network.head.cls_logits.bias.add_(1.0)  # the weights move between validations
        evaluator.run([0], max_epochs=1)
        if value == max(validation) and value > 0:
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.network.head.cls_logits.bias.add_(1.0)
    trainer.run([0], max_epochs=1)
    final = torch.load(tmp_path / FINAL_MODEL_FILE, weights_only=True)
    chosen = torch.load(tmp_path / MODEL_FILE, weights_only=True)
    _small_model().load_state_dict(chosen)  # plain state dict of the architecture
    key = "network.head.cls_logits.bias"
    assert torch.equal(final[key], model.state_dict()[key])
    expected = model.state_dict()[key] if model_is_final else best_state[key]
    assert torch.equal(chosen[key], expected)
    assert not list(tmp_path.glob(".tmp_*")), "no temporary file left behind"


def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = save_atomic({"a": torch.ones(2)}, tmp_path / "model.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def _item_with_scored_boxes():
    """Three GT boxes; predictions: two good ones with scores 0.9 / 0.6, one false positive at 0.3."""
    gt_boxes = np.array([[0, 0, 0, 10, 10, 5], [20, 20, 0, 30, 30, 5], [40, 0, 0, 50, 10, 5]], dtype=np.float32)
    gt = np.zeros((60, 40, 8), dtype=np.int32)
    for k, b in enumerate(gt_boxes.astype(int), start=1):
        gt[b[0] : b[3], b[1] : b[4], b[2] : b[5]] = k
    boxes = np.array([[0, 0, 0, 10, 10, 5], [20, 20, 0, 30, 30, 5], [0, 30, 0, 10, 40, 5]], dtype=np.float32)
    instances = np.zeros_like(gt)
    for k, b in enumerate(boxes.astype(int), start=1):
        instances[b[0] : b[3], b[1] : b[4], b[2] : b[5]] = k
    pred = {"boxes": boxes, "scores": np.array([0.9, 0.6, 0.3]), "instances": instances}
    return pred, {"box": gt_boxes, "gt_instances": gt}


def test_threshold_counts_score_each_threshold_exactly():
    pred, gt = _item_with_scored_boxes()
    counts = threshold_counts(pred, gt, [0.2, 0.5, 0.7])
    np.testing.assert_array_equal(counts[:, 0], [[2, 3, 3], [2, 3, 2], [1, 3, 1]])  # det: tp, n_gt, n_pred
    np.testing.assert_array_equal(counts[:, 1], counts[:, 0])  # the masks are the boxes here


def test_calibrator_picks_the_f1_optimal_threshold_into_the_network_buffer():
    pred, gt = _item_with_scored_boxes()
    model = _small_model()
    evaluator = Engine(lambda e, b: {"pred": [pred], "label": [gt]})
    ScoreThresholdCalibrator(model).attach(evaluator)
    evaluator.run([0], max_epochs=1)
    assert 0.3 <= float(model.score_thresh) < 0.6, "drops the 0.3 false positive, keeps the 0.6 detection"
    assert evaluator.state.metrics["val_det_f1"] == pytest.approx(0.8)
    assert evaluator.state.metrics["score_thresh"] == pytest.approx(float(model.score_thresh))


def test_calibrator_takes_the_middle_of_the_near_best_range_when_validating_on_seen_data():
    """F1 is best from 0.30 to 0.55: held-out validation takes the top, the training volumes the middle."""
    pred, gt = _item_with_scored_boxes()
    for seen_data, expected in ((False, 0.55), (True, 0.4)):
        model = _small_model()
        evaluator = Engine(lambda e, b: {"pred": [pred], "label": [gt]})
        ScoreThresholdCalibrator(model, seen_data=seen_data).attach(evaluator)
        evaluator.run([0], max_epochs=1)
        assert float(model.score_thresh) == pytest.approx(expected), f"seen_data={seen_data}"
        assert evaluator.state.metrics["val_det_f1"] == pytest.approx(0.8)


def test_inference_spacing_overrides_the_file_and_a_guess_is_named(tmp_path, caplog):
    """A TIFF without metadata is read at 1 µm with a warning naming it, unless ``spacing`` is given."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(str(inputs / "bare.tif"), np.zeros((8, 32, 32), dtype=np.uint16))
    predictor = WeakSegPredictor(_small_model())
    with caplog.at_level(logging.WARNING):
        run_inference(predictor, inputs, tmp_path / "guessed", preview=False)
    assert "bare.tif" in caplog.text and "--spacing" in caplog.text
    assert json.loads((tmp_path / "guessed" / "bare_boxes.json").read_text())["spacing"] == [1.0, 1.0, 1.0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_inference(predictor, inputs, tmp_path / "given", preview=False, spacing=[0.2, 0.2, 0.5])
    assert "assuming" not in caplog.text
    assert json.loads((tmp_path / "given" / "bare_boxes.json").read_text())["spacing"] == [0.2, 0.2, 0.5]
