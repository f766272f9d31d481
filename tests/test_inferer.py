"""``WeakSegInferer``: the predictor as a MONAI ``Inferer`` (what the bundle's evaluators call)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weakseg_monai.data.synthetic import NucleusModel, generate_stack
from weakseg_monai.inference import WeakSegInferer, WeakSegPredictor

from .test_bundle import shipped_model


@pytest.fixture(scope="module")
def stack():
    image, _ = generate_stack([5], shape=(64, 64, 16), model=NucleusModel(n_cells=(6, 8)))
    return torch.from_numpy(image.astype(np.float32))[None]


def test_the_inferer_gives_the_predictors_output_per_volume(stack):
    model = shipped_model()
    direct = WeakSegPredictor(model)(stack, (0.5, 0.5, 1.0))
    single = WeakSegInferer()(stack, model, spacing=(0.5, 0.5, 1.0))
    batch = WeakSegInferer()([stack, None], model, spacing=[(0.5, 0.5, 1.0), None])
    assert batch[1] is None, "an input that failed to load stays a gap, not an error"
    for out in (single, batch[0]):
        np.testing.assert_array_equal(out["instances"], direct["instances"])
        np.testing.assert_array_equal(out["boxes"], direct["boxes"])
        assert out["seconds"] > 0


def test_score_floor_lowers_the_threshold_only_during_the_call(stack):
    model = shipped_model()
    threshold, topk = float(model.score_thresh), model.selector.topk_candidates
    plain = WeakSegInferer()(stack, model, spacing=(0.5, 0.5, 1.0))
    floored = WeakSegInferer(score_floor=0.01)(stack, model, spacing=(0.5, 0.5, 1.0))
    assert len(floored["scores"]) >= len(plain["scores"]) and floored["scores"].min() < threshold
    assert float(model.score_thresh) == threshold and model.selector.topk_candidates == topk


def test_record_errors_turns_a_failed_volume_into_a_message(stack):
    model = shipped_model()
    flat = stack[:, :, :, 0]  # (1, X, Y): not a 3D volume
    with pytest.raises(ValueError, match="single-channel"):
        WeakSegInferer()(flat, model, spacing=(0.5, 0.5, 1.0))
    out = WeakSegInferer(record_errors=True)([flat, stack], model, spacing=[(0.5, 0.5, 1.0)] * 2)
    assert "single-channel" in out[0]["error"] and len(out[1]["boxes"]) > 0
