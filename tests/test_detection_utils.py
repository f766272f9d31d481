"""Anchors, the paper's matching, sampling, Eq. 2 box coding, L_box."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.apps.detection.utils.box_coder import BoxCoder

from weakseg_monai.losses.box_loss import box_loss
from weakseg_monai.networks.heads import flatten_anchor_outputs
from weakseg_monai.utils.anchors import anchor_shapes_from_boxes, make_anchor_generator
from weakseg_monai.utils.matching import IGNORE, NEGATIVE, match_anchors, sample_anchors


def _box(cx, cy, cz, w, h, d):
    return [cx - w / 2, cy - h / 2, cz - d / 2, cx + w / 2, cy + h / 2, cz + d / 2]


def test_matching_follows_the_paper():
    anchors = torch.tensor(
        [
            _box(10, 10, 5, 10, 10, 4),  # IoU with gt0 = 1
            _box(11, 10, 5, 10, 10, 4),  # IoU 0.818 > 0.4
            _box(16, 10, 5, 10, 10, 4),  # IoU 0.25: negative
            _box(40, 40, 5, 10, 10, 4),  # best (only) overlap of gt1 but IoU < 0.4
            _box(80, 80, 5, 10, 10, 4),  # no overlap
        ]
    )
    gt = torch.tensor([_box(10, 10, 5, 10, 10, 4), _box(44, 44, 5, 12, 12, 4)])
    matched = match_anchors(anchors, gt, positive_iou=0.4)
    assert matched.tolist() == [0, 0, NEGATIVE, 1, NEGATIVE]
    banded = match_anchors(anchors, gt, positive_iou=0.4, negative_iou=0.2)
    assert banded.tolist() == [0, 0, IGNORE, 1, NEGATIVE]
    ignored = match_anchors(anchors, gt, gt_ignore=torch.tensor([False, True]))
    assert ignored.tolist() == [0, 0, NEGATIVE, IGNORE, NEGATIVE]
    assert match_anchors(anchors, torch.zeros(0, 6)).tolist() == [NEGATIVE] * 5


def test_negatives_over_an_ignored_sliver_are_ignored_not_background():
    """An ignored box 3 voxels thin (a crop cut it) holds part of a real object: the anchors that cover half of it
    or are centred in it must not teach the classifier that it is background; an anchor beside it stays negative."""
    sliver = torch.tensor([[20.0, 20.0, 0.0, 36.0, 36.0, 3.0]])
    anchors = torch.tensor(
        [
            _box(28, 28, 4, 16, 16, 8),  # covers all of it, IoU 0.375: would be a (weak) positive, now ignored
            _box(28, 28, 2, 24, 24, 12),  # covers all of it at IoU 0.09: was a negative
            _box(22, 22, 2, 8, 8, 4),  # centred in it, covers 1/4 of it
            _box(48, 48, 2, 8, 8, 4),  # beside it
        ]
    )
    plain = match_anchors(anchors, sliver)
    ignored = match_anchors(anchors, sliver, gt_ignore=torch.tensor([True]))
    assert plain[1:].tolist() == [NEGATIVE] * 3
    assert ignored.tolist() == [IGNORE, IGNORE, IGNORE, NEGATIVE]



def test_adaptive_matching_gives_a_sliver_no_anchor_fits_several_positives_and_leaves_a_fitting_box_alone():
    """A box cut to 3 voxels in z (IoU <= 0.4 with every anchor shape) gets one positive by the paper's rule and
    several with MONAI's ATSS positives added; a box the shapes fit keeps almost the paper's positives."""
    shapes = [[8, 8, 4], [16, 12, 6], [10, 18, 8], [6, 8, 8]]
    anchors = make_anchor_generator(shapes)(torch.zeros(1, 1, 64, 64, 16), [torch.zeros(1, 1, 16, 16, 8)])[0]
    sliver = torch.tensor([[11.0, 9.0, 0.0, 28.0, 26.0, 3.0]])
    fitting = torch.tensor([_box(34, 34, 8, 16, 12, 6)])
    paper = match_anchors(anchors, sliver)
    union = match_anchors(anchors, sliver, adaptive=(9, len(shapes)))
    assert int((paper >= 0).sum()) <= 2 and int((union >= 0).sum()) >= 5
    assert ((union >= 0) | (paper < 0)).all()  # the paper's positives stay positive
    paper, union = match_anchors(anchors, fitting), match_anchors(anchors, fitting, adaptive=(9, len(shapes)))
    assert int((union >= 0).sum()) - int((paper >= 0).sum()) <= 2


def test_paired_iou_is_the_diagonal_of_monai_box_iou():
    from monai.data.box_utils import box_iou

    from weakseg_monai.utils.boxes import paired_iou

    start = torch.rand(12, 3) * 10
    a, b = torch.cat([start, start + torch.rand(12, 3) * 8 + 1], 1), torch.cat([start + 2, start + 9], 1)
    b[0] = torch.tensor([50.0, 50, 50, 52, 52, 52])  # no overlap
    assert torch.allclose(paired_iou(a, b), torch.diagonal(box_iou(a, b)), atol=1e-6) and paired_iou(a, b)[0] == 0

def test_atss_positives_are_monais_atss_matches_on_the_iou_matrix_we_already_have():
    """``atss_positives`` = MONAI's ``ATSSMatcher(center_in_gt=False)`` (the reference) on random boxes: crop-cut,
    overlapping, inside and across the faces of a 72 x 72 x 32 crop."""
    from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
    from monai.data.box_utils import box_iou

    from weakseg_monai.utils.matching import atss_positives

    shapes = [[8, 8, 4], [16, 12, 6], [10, 18, 8], [6, 8, 8], [6, 16, 4]]
    anchors = make_anchor_generator(shapes)(torch.zeros(1, 1, 72, 72, 32), [torch.zeros(1, 1, 18, 18, 16)])[0].float()
    reference = ATSSMatcher(num_candidates=9, similarity_fn=box_iou, center_in_gt=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        n = int(torch.randint(1, 40, (1,), generator=generator))
        start = torch.rand(n, 3, generator=generator) * torch.tensor([72.0, 72, 32]) - 3
        size = torch.rand(n, 3, generator=generator) * torch.tensor([20.0, 20, 10]) + 1
        boxes = torch.cat([start.clamp(min=0), torch.maximum(start + size, start.clamp(min=0) + 1)], dim=1)
        _, expected = reference.compute_matches(boxes, anchors, [anchors.shape[0] // len(shapes)], len(shapes))
        assert torch.equal(atss_positives(box_iou(boxes, anchors), boxes, anchors, 9, len(shapes)), expected)

def test_sampling_hard_negatives_and_ratio():
    matched = torch.tensor([0, -1, -1, -1, -1, -1, -1, -1, -2, 1])
    scores = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.0, 0.3, 0.05, 0.99, 0.5])
    pos, neg = sample_anchors(matched, scores, neg_pos_ratio=1.5, min_negatives=1)
    assert pos.tolist() == [0, 9]
    assert sorted(neg.tolist()) == [2, 4, 6]  # the 3 hardest negatives; the ignored anchor 8 never
    _, rand_neg = sample_anchors(matched, None, neg_pos_ratio=1.0, min_negatives=5)
    assert len(rand_neg) == 5 and set(rand_neg.tolist()) <= {1, 2, 3, 4, 5, 6, 7}


def test_anchor_order_matches_head_flattening():
    """Channel a·d + j at location (i, j, k) must meet anchor a centred on that location."""
    shapes = [[4, 4, 2], [8, 8, 4]]
    gen = make_anchor_generator(shapes)
    image = torch.zeros(1, 1, 16, 12, 8)
    level = torch.zeros(1, 2, 4, 3, 2)  # stride (4, 4, 4)
    anchors = gen(image, [level])[0]
    r, d = 2, 6
    head = torch.zeros(1, r * d, 4, 3, 2)
    grid = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(3), torch.arange(2), indexing="ij"))
    for a in range(r):
        head[0, a * d : a * d + 3] = grid.float()  # location index
        head[0, a * d + 3] = a  # anchor index
    flat = flatten_anchor_outputs(head, d)[0]
    centres = (anchors[:, :3] + anchors[:, 3:]) / 2
    sizes = anchors[:, 3:] - anchors[:, :3]
    np.testing.assert_allclose(centres, flat[:, :3] * 4 + 2)
    np.testing.assert_allclose(sizes, torch.tensor(shapes, dtype=torch.float32)[flat[:, 3].long()])


def test_anchor_shapes_from_boxes_recovers_clusters():
    rng = np.random.default_rng(0)
    small = rng.normal([10, 10, 5], 0.3, (40, 3))
    large = rng.normal([20, 20, 10], 0.5, (40, 3))
    sizes = np.concatenate([small, large])
    boxes = np.concatenate([np.zeros_like(sizes), sizes], axis=1)
    assert anchor_shapes_from_boxes(boxes, n_shapes=2) == [[10, 10, 6], [20, 20, 10]]


def test_box_coder_is_eq2():
    anchors = torch.tensor([_box(10, 12, 5, 8, 10, 4)])
    gt = torch.tensor([_box(11, 10, 6, 10, 8, 6)])
    coder = BoxCoder(weights=(1.0,) * 6)
    t = coder.encode_single(gt, anchors)[0]
    want = [(11 - 10) / 8, (10 - 12) / 10, (6 - 5) / 4, math.log(10 / 8), math.log(8 / 10), math.log(6 / 4)]
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(coder.decode_single(t[None], anchors).numpy(), gt.numpy(), atol=1e-5)


def test_box_loss_normalisation():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    deltas = torch.zeros(3, 6, requires_grad=True)
    classes = torch.tensor([1, 0, 0])
    pos, neg = torch.tensor([0]), torch.tensor([1, 2])
    target = torch.full((1, 6), 2.0)
    loss_cls, loss_reg = box_loss(logits, deltas, classes, target, pos, neg, reg_weight=2.0, smooth_l1_beta=1.0)
    ce = [math.log(2), -math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(1 / (1 + math.e))]
    assert math.isclose(loss_cls.item(), sum(ce) / 3, rel_tol=1e-6)
    assert math.isclose(loss_reg.item(), 2.0 * 6 * 1.5 / 1, rel_tol=1e-6)  # smooth-L1(2) = 1.5 per value
    empty_cls, empty_reg = box_loss(logits, deltas, classes, torch.zeros(0, 6), pos[:0], neg)
    assert empty_reg.item() == 0.0 and empty_reg.requires_grad
