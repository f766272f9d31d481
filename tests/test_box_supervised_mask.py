"""The box-supervised mask loss (3D BoxInst) and who owns each instance's mask supervision."""

from __future__ import annotations

import torch

from weakseg_monai.losses import BoxSupervisedMaskLoss, pairwise_loss, projection_loss
from weakseg_monai.losses.box_supervised_mask import box_in_roi_grid, neighbour_offsets
from weakseg_monai.networks import MaskBranch, VoxResDetectorNet, WeakInstanceSegNet
from weakseg_monai.networks.mask_rois import split_mask_roi_budget
from weakseg_monai.networks.postprocess import paste_masks_in_volume


def small_model(anchor_shapes=((8, 8, 4),), roi_size: int = 4, **branch) -> WeakInstanceSegNet:
    """A small detector whose mask branch takes ``branch`` (``context``, ``box_mask_loss``)."""
    return WeakInstanceSegNet(
        VoxResDetectorNet(channels=(8, 16, 24), blocks=(1, 1, 1), num_anchors=len(anchor_shapes)),
        anchor_shapes,
        mask_branch=MaskBranch(roi_size=roi_size, mask_channels=8, **branch),
    )


def test_the_gt_box_is_drawn_into_the_roi_grid():
    roi = torch.tensor([[0.0, 0.0, 0.0, 8.0, 8.0, 8.0]])
    gt = torch.tensor([[0.0, 4.0, 2.0, 8.0, 8.0, 6.0]])
    grid = box_in_roi_grid(gt, roi, 4)[0]  # cells of 2 voxels, centres at 1, 3, 5, 7
    assert grid[:, 2:, 1:3].min() == 1 and grid.sum() == 4 * 2 * 2


def test_projection_term_is_zero_for_a_mask_filling_its_box_projections_and_positive_otherwise():
    roi = torch.tensor([[0.0, 0.0, 0.0, 8.0, 8.0, 8.0]])
    box = box_in_roi_grid(torch.tensor([[2.0, 2.0, 2.0, 6.0, 6.0, 6.0]]), roi, 8)
    ball = box.clone()
    ball[0, 2, 2, 2] = ball[0, 5, 5, 5] = 0  # corners cut: a round object still touches every face of its box
    cross = torch.zeros_like(box)
    cross[0, 2:6, 3, 3] = cross[0, 3, 2:6, 3] = cross[0, 3, 3, 2:6] = 1
    spill = box.clone()
    spill[0, 0, 0, 0] = 1
    for dims in (1, 2):
        assert projection_loss(box, box, dims) < 1e-4
        assert projection_loss(spill, box, dims) > 0
        assert projection_loss(torch.zeros_like(box), box, dims) > 0.9
    # profiles along each axis (dims 1) ask only that the object touches all six faces: any such shape is free
    assert projection_loss(ball, box, 1) < 1e-4 and projection_loss(cross, box, 1) < 1e-4
    # images on each axis pair (dims 2) also want the box's rectangles filled: a cross leaves them mostly empty
    assert projection_loss(cross, box, 2) > 0.05


def test_pairwise_term_prefers_equal_labels_on_uniform_intensity_inside_the_box():
    box = torch.ones(1, 6, 6, 6)
    image = torch.full((1, 6, 6, 6), 0.5)
    uniform = torch.full((1, 6, 6, 6), 4.0)
    split = uniform.clone()
    split[:, 3:] = -4.0
    assert pairwise_loss(uniform, image, box) < pairwise_loss(split, image, box)
    edge = image.clone()
    edge[:, 3:] = 5.0  # a strong intensity edge where the labels change: those pairs are not "similar"
    assert pairwise_loss(split, edge, box) < pairwise_loss(split, image, box)
    assert len(neighbour_offsets((1, 2))) == 26


def test_the_roi_budget_is_shared_and_unused_slots_move_over():
    a, b = torch.arange(10), torch.arange(100, 110)
    x, y = split_mask_roi_budget(a, b, 8)
    assert (len(x), len(y)) == (4, 4)
    x, y = split_mask_roi_budget(a[:2], b, 8)
    assert (len(x), len(y)) == (2, 6)
    x, y = split_mask_roi_budget(a, b[:0], 8)
    assert (len(x), len(y)) == (8, 0)


def _batch():
    images = torch.rand(1, 1, 32, 32, 16)
    instances = torch.zeros(32, 32, 16, dtype=torch.int32)
    instances[4:12, 4:12, 2:8] = 1
    images[0, 0, 4:12, 4:12, 2:8] += 2
    images[0, 0, 18:26, 18:26, 6:12] += 2
    target = {
        "box": torch.tensor([[4.0, 4.0, 2.0, 12.0, 12.0, 8.0], [18.0, 18.0, 6.0, 26.0, 26.0, 12.0]]),
        "label": torch.tensor([0, 0]),
        "mask_annotated": torch.tensor([True, False]),
        "instances": instances,
    }
    return images, [target]


def _mask_head_gradient(model: WeakInstanceSegNet, key: str) -> float:
    torch.manual_seed(0)
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    model.zero_grad()
    losses[key].backward()
    return sum(float(p.grad.abs().sum()) for p in model.mask_head.parameters() if p.grad is not None)


def test_box_only_instances_teach_the_mask_head_only_through_the_box_terms():
    torch.manual_seed(0)
    with_box_terms = small_model(box_mask_loss=BoxSupervisedMaskLoss(warmup_iterations=0))
    assert "loss_mask_box" in with_box_terms(*_batch())
    assert _mask_head_gradient(with_box_terms, "loss_mask_box") > 0

    # the paper's rule: the BCE only ever sees the annotated instance. With the annotated one removed, the
    # BCE has nothing to learn from even though the box-only RoIs are in the batch (weight 0).
    images, targets = _batch()
    targets[0]["mask_annotated"] = torch.tensor([False, False])
    targets[0]["instances"] = torch.zeros_like(targets[0]["instances"])
    with_box_terms.train()
    losses = with_box_terms(images, targets)
    with_box_terms.zero_grad()
    losses["loss_mask"].backward()
    bce_gradient = sum(float(p.grad.abs().sum()) for p in with_box_terms.mask_head.parameters() if p.grad is not None)
    assert losses["loss_mask"].item() == 0.0 and bce_gradient == 0.0


def test_box_terms_train_the_mask_head_and_the_backbone_only_when_asked():
    """Default: box-only RoIs see detached features, so their loss reaches the mask head and not the backbone
    that detection and the voxel-mask instances share; ``train_backbone=True`` lets it through."""
    for train_backbone in (False, True):
        torch.manual_seed(0)
        loss = BoxSupervisedMaskLoss(warmup_iterations=0, train_backbone=train_backbone)
        model = small_model(context=0.25, box_mask_loss=loss).train()
        losses = model(*_batch())
        model.zero_grad()
        losses["loss_mask_box"].backward()
        backbone = sum(float(p.grad.abs().sum()) for p in model.network.parameters() if p.grad is not None)
        head = sum(float(p.grad.abs().sum()) for p in model.mask_head.parameters() if p.grad is not None)
        assert head > 0
        assert (backbone > 0) == train_backbone
        # the voxel-mask instance's BCE still trains the backbone either way
        losses = model(*_batch())
        model.zero_grad()
        losses["loss_mask"].backward()
        assert sum(float(p.grad.abs().sum()) for p in model.network.parameters() if p.grad is not None) > 0


def test_without_box_terms_the_model_is_the_papers():
    model = small_model()
    losses = model.train()(*_batch())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    off = small_model(box_mask_loss=BoxSupervisedMaskLoss(weight=0.0))
    assert set(off.train()(*_batch())) == {"loss_cls", "loss_box_reg", "loss_mask"}


def test_boxes_alone_teach_the_mask_head_to_segment_its_training_nuclei():
    """A tiny overfit from boxes only (no voxel mask at all): the box terms alone must give mask IoU > 0.6 on the
    training nuclei; a mask filling each box would score about 0.5 (an ellipsoid fills ~52% of its box)."""
    torch.manual_seed(0)
    shape = (40, 40, 20)
    grid = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) + 0.5 for s in shape], indexing="ij")
    nuclei = [(10, 10, 6, 5, 6, 3.5), (28, 12, 12, 6, 5, 4), (12, 29, 13, 5, 5, 4), (29, 29, 6, 6, 6, 3.5)]
    truth = torch.zeros(shape, dtype=torch.int32)
    boxes = []
    for k, (cx, cy, cz, rx, ry, rz) in enumerate(nuclei):
        inside = ((grid[0] - cx) / rx) ** 2 + ((grid[1] - cy) / ry) ** 2 + ((grid[2] - cz) / rz) ** 2 <= 1
        truth[inside] = k + 1
        voxels = torch.nonzero(inside)
        boxes.append([*voxels.min(0).values.tolist(), *(voxels.max(0).values + 1).tolist()])
    images = ((truth > 0).float() * 0.8 + 0.1 + 0.05 * torch.randn(shape))[None, None]
    boxes = torch.tensor(boxes, dtype=torch.float32)
    target = {
        "box": boxes,
        "label": torch.zeros(4, dtype=torch.long),
        "mask_annotated": torch.zeros(4, dtype=torch.bool),  # boxes only
        "instances": torch.zeros_like(truth),
    }
    model = small_model(
        [[10, 10, 7]], roi_size=6, context=0.25, box_mask_loss=BoxSupervisedMaskLoss(warmup_iterations=20)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.005)
    model.train()
    for _ in range(100):
        losses = model(images, [target])
        assert losses["loss_mask"].item() == 0.0  # no voxel mask anywhere: only the box terms teach the head
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model.dense_outputs(images)
        frames, probs = model.object_masks(out, 0, {"boxes": boxes}, torch.ones(4, dtype=torch.bool))
        found, _ = paste_masks_in_volume(probs, frames, torch.ones(4), shape, model.mask_threshold)
    ious = []
    for k in range(1, 5):
        pred = found == k  # value k = the k-th box (all kept: every box gets voxels)
        ious.append(float((pred & (truth == k)).sum() / (pred | (truth == k)).sum()))
    assert min(ious) > 0.6, ious


def test_smoothing_before_projecting_refuses_the_stripe_shortcut():
    """Sparse diagonal stripes (what a transposed convolution's checkerboard offers) fill every max projection
    of a box, so the raw projection term cannot tell them from a solid object; a local mean first can."""
    roi = torch.tensor([[0.0, 0.0, 0.0, 12.0, 12.0, 12.0]])
    box = box_in_roi_grid(torch.tensor([[0.0, 0.0, 0.0, 12.0, 12.0, 12.0]]), roi, 12)
    i, j, k = torch.meshgrid(*[torch.arange(12)] * 3, indexing="ij")
    stripes = ((i + j + k) % 4 == 0).float()[None]
    assert projection_loss(stripes, box, 2) < 1e-4  # the shortcut the plain term allows
    loss = BoxSupervisedMaskLoss(pairwise_weight=0.0, outside_weight=0.0, projection_smoothing=3)
    logits = {name: torch.logit(m.clamp(1e-4, 1 - 1e-4)) for name, m in {"stripes": stripes, "solid": box}.items()}
    rois = torch.cat([torch.zeros(1, 1), roi], dim=1)
    gt = roi.clone()
    images = torch.zeros(1, 1, 12, 12, 12)
    assert loss(logits["solid"], rois, gt, images) < 0.01
    assert loss(logits["stripes"], rois, gt, images) > 0.2
