"""The VoxResNet + boundary class + connected components baseline: targets, post-processing, config."""

from __future__ import annotations

import numpy as np
import torch

from weakseg_monai.data.synthetic import generate_stack
from weakseg_monai.inference import BaselinePredictor
from weakseg_monai.metrics import segmentation_f1
from weakseg_monai.networks import VoxResSegNet
from weakseg_monai.networks.baseline import BOUNDARY, INTERIOR, instances_to_semantic, semantic_to_instances


def test_boundary_class_separates_touching_cells():
    labels = np.zeros((12, 6, 4), dtype=np.int32)
    labels[1:6, 1:5, 1:3] = 1
    labels[6:11, 1:5, 1:3] = 2  # touches cell 1 face to face
    classes = instances_to_semantic(labels)
    assert classes[5, 2, 1] == BOUNDARY and classes[6, 2, 1] == BOUNDARY  # the shared face
    assert classes[3, 2, 1] == BOUNDARY  # outer face (z = 1 touches background)
    assert (classes[labels == 0] == 0).all()
    inner = np.zeros((12, 8, 6), dtype=np.int32)
    inner[2:9, 2:7, 1:5] = 3
    assert instances_to_semantic(inner)[5, 4, 2] == INTERIOR


def test_components_of_the_ideal_targets_recover_the_instances():
    """Post-processing alone, fed the ideal 3-class map of a crowded stack, finds the touching nuclei."""
    _, labels = generate_stack([3, 0, 0])
    recovered = semantic_to_instances(instances_to_semantic(labels), min_voxels=5)
    score = segmentation_f1(labels, recovered, 0.5)
    assert score["f1"] > 0.9, score


def test_baseline_predictor_returns_the_weak_models_contract():
    model = VoxResSegNet().eval()
    with torch.no_grad():
        model.head[-1].bias.copy_(torch.tensor([-5.0, 5.0, -5.0]))  # everything "interior": one component
    image = torch.rand(1, 40, 36, 10)
    out = BaselinePredictor(model)(image, (0.5, 0.5, 1.0))
    assert out["instances"].shape == (40, 36, 10)
    assert len(out["boxes"]) == int(out["instances"].max()) == 1
    np.testing.assert_allclose(out["boxes"][0], [0, 0, 0, 40, 36, 10])
