"""Partial-mask loss (mask-weight layer), mask targets, NMS and mask paste."""

from __future__ import annotations

import torch
from monai.apps.detection.utils.box_coder import BoxCoder

from weakseg_monai.losses.partial_mask import partial_mask_loss, project_masks_on_boxes
from weakseg_monai.networks.postprocess import paste_masks_in_volume, select_detections


def test_box_only_rois_get_zero_loss_and_zero_gradient():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 4, 4, 4, generator=gen, requires_grad=True)
    targets = (torch.rand(3, 4, 4, 4, generator=gen) > 0.5).float()
    targets[1] = float("nan")  # whatever a box-only RoI carries must not matter
    weights = torch.tensor([1.0, 0.0, 1.0])
    loss = partial_mask_loss(logits, targets, weights)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.count_nonzero(logits.grad[1]) == 0
    assert torch.count_nonzero(logits.grad[0]) > 0
    reference = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 2], 0], targets[[0, 2]])
    assert torch.allclose(loss, reference)
    # changing the box-only RoI's logits changes nothing
    other = logits.detach().clone()
    other[1] += 100
    assert torch.allclose(partial_mask_loss(other, targets, weights), loss)


def test_no_annotated_roi_gives_zero_not_nan():
    logits = torch.randn(2, 1, 3, 3, 3, requires_grad=True)
    loss = partial_mask_loss(logits, torch.zeros(2, 3, 3, 3), torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_mask_targets_follow_the_instance_inside_its_box():
    volume = torch.zeros(20, 20, 10, dtype=torch.int32)
    volume[4:12, 4:12, 2:6] = 3  # the instance fills the left half of the RoI along x
    volume[12:16, 4:12, 2:6] = 5  # another instance in the right half
    boxes = torch.tensor([[4.0, 4.0, 2.0, 20.0, 12.0, 6.0]])
    target = project_masks_on_boxes(volume, torch.tensor([3]), boxes, 8)
    assert target.shape == (1, 8, 8, 8)
    assert target[0, :4].min() == 1 and target[0, 4:].max() == 0


def test_select_detections_nms_and_threshold():
    anchors = torch.tensor([[0, 0, 0, 10, 10, 4], [1, 0, 0, 11, 10, 4], [30, 30, 0, 40, 40, 4]], dtype=torch.float32)
    logits = torch.tensor([[0.0, 3.0], [0.0, 2.0], [0.0, -3.0]])
    boxes, scores, classes = select_detections(
        logits, torch.zeros(3, 6), anchors, BoxCoder((1.0,) * 6), (64, 64, 8), score_thresh=0.5, nms_thresh=0.3
    )
    assert boxes.shape == (1, 6) and torch.allclose(boxes[0], anchors[0])
    assert classes.tolist() == [1] and scores[0] > 0.9


def test_paste_higher_score_wins_and_empty_instances_drop():
    probs = torch.ones(3, 4, 4, 4)
    probs[2] = 0.0  # an instance whose mask is empty
    boxes = torch.tensor(
        [[0.0, 0.0, 0.0, 8.0, 8.0, 4.0], [4.0, 4.0, 0.0, 12.0, 12.0, 4.0], [20.0, 20.0, 0.0, 24.0, 24.0, 4.0]]
    )
    labels, keep = paste_masks_in_volume(probs, boxes, torch.tensor([0.6, 0.9, 0.8]), (32, 32, 4))
    assert keep.tolist() == [True, True, False]
    assert labels[5, 5, 1] == 2  # overlap goes to the higher score
    assert labels[1, 1, 1] == 1 and labels[10, 10, 1] == 2
    assert int((labels == 1).sum()) == 8 * 8 * 4 - 4 * 4 * 4
    assert labels[21, 21, 1] == 0
