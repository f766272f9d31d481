"""What to annotate next (``weakseg_monai.inference.uncertainty``): flipped predictions mapped back, the
disagreement score of each box, and the order of the boxes without a mask -- on real label volumes and, for the
whole path, the shipped model on the shipped sample."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from weakseg_monai.data.instances import boxes_from_instances
from weakseg_monai.families import load_model
from weakseg_monai.inference import LoadInputd, WeakSegPredictor
from weakseg_monai.inference.uncertainty import (
    FLIPS,
    annotation_order,
    flip_boxes,
    flipped_predictions,
    mask_disagreement,
    rank_boxes,
)

from .conftest import BUNDLE_DIR


def two_nuclei(shape=(40, 36, 12)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    labels[4:14, 6:15, 2:7] = 1
    labels[22:33, 18:30, 5:11] = 2
    return labels


def components(image: torch.Tensor, spacing) -> dict:
    """A flip-equivariant 'model': the connected components of the bright voxels, in the predictor's output form."""
    instances, n = ndimage.label(image[0].numpy() > 0.5)
    return {"boxes": boxes_from_instances(instances, n).astype(np.float32), "instances": instances}


def test_flipped_boxes_are_the_boxes_of_the_flipped_labels_and_flipping_twice_is_the_identity():
    labels = two_nuclei()
    boxes = boxes_from_instances(labels)
    for axes in [(0,), (1,), (2,), (0, 2)]:
        flipped = np.flip(labels, axes)
        np.testing.assert_array_equal(flip_boxes(boxes, axes, labels.shape), boxes_from_instances(flipped))
        np.testing.assert_array_equal(flip_boxes(flip_boxes(boxes, axes, labels.shape), axes, labels.shape), boxes)


def test_runs_that_agree_score_zero_and_a_box_nothing_matches_scores_one():
    labels = two_nuclei()
    image = torch.from_numpy((labels > 0).astype(np.float32))[None]
    runs = flipped_predictions(components, image, (1.0, 1.0, 1.0))
    assert len(runs) == len(FLIPS)
    for run in runs:  # mapped back to the image's own frame
        np.testing.assert_array_equal(run["instances"] > 0, labels > 0)
    empty_box = [30, 2, 0, 38, 8, 4]
    scores = mask_disagreement(runs, np.concatenate([boxes_from_instances(labels), [empty_box]]))
    np.testing.assert_allclose(scores, [0.0, 0.0, 1.0], atol=1e-4)


def test_a_run_that_misses_an_object_costs_the_binary_entropy_of_its_vote():
    labels = two_nuclei()
    boxes = boxes_from_instances(labels)
    whole = {"boxes": boxes.astype(np.float32), "instances": labels}
    missing = {"boxes": boxes[1:].astype(np.float32), "instances": np.where(labels == 2, 1, 0)}
    scores = mask_disagreement([whole, whole, whole, missing], boxes)
    p = 0.75
    entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert scores[1] < 1e-4  # every run holds object 2 (as its first instance in the last run)
    np.testing.assert_allclose(scores[0], entropy, atol=1e-4)  # object 1 fills its box


def test_the_order_holds_only_boxes_without_a_mask_most_uncertain_first():
    order = annotation_order(np.array([0.9, 0.1, 0.5, 0.5, 1.0]), np.array([True, False, False, False, False]))
    assert order.tolist() == [4, 2, 3, 1]


def test_the_shipped_model_ranks_the_boxes_of_the_shipped_sample():
    d = LoadInputd("image")({"image": str(BUNDLE_DIR / "sample" / "sample_000.nii.gz")})
    image, spacing = torch.as_tensor(d["image"]), d["spacing"]
    predictor = WeakSegPredictor(load_model(BUNDLE_DIR / "models" / "model.pt"))
    found = predictor(image, spacing)
    boxes = np.concatenate([found["boxes"], [[0, 0, 0, 6, 6, 3]]])  # plus a box around nothing in a corner
    annotated = np.zeros(len(boxes), dtype=bool)
    annotated[0] = True
    order, scores = rank_boxes(predictor, image, spacing, boxes, annotated)
    assert sorted(order.tolist()) == list(range(1, len(boxes)))
    assert order[0] == len(boxes) - 1 and scores[-1] == 1.0  # nothing found there: paint it first
    assert (scores[:-1] < 0.5).all(), scores  # the model's own objects: its flips mostly agree
