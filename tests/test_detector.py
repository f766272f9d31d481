"""The whole model: loss contract, zero-annotation batches, eval output, export, and an overfit run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.box_utils import box_iou

from weakseg_monai.data.instances import boxes_from_instances
from weakseg_monai.data.synthetic import NucleusModel, generate_stack
from weakseg_monai.networks import BoxSelector, MaskBranch, VoxResDetectorNet, WeakInstanceSegNet
from weakseg_monai.utils.anchors import anchor_shapes_from_boxes
from weakseg_monai.utils.matching import AnchorAssigner


def small_model(anchor_shapes, **kwargs) -> WeakInstanceSegNet:
    """A small detector composed from its parts (fewer channels, one block per stage, 16 negatives at least)."""
    return WeakInstanceSegNet(
        VoxResDetectorNet(channels=(8, 16, 24), blocks=(1, 1, 1), num_anchors=len(anchor_shapes)),
        anchor_shapes,
        assigner=AnchorAssigner(min_negatives=16),
        mask_branch=MaskBranch(roi_size=8, mask_channels=16),
        **kwargs,
    )


def _tiny_case(annotate_every: int = 2):
    image, instances = generate_stack(
        [5], shape=(48, 48, 16), spacing=(0.5, 0.5, 1.0), model=NucleusModel(n_cells=(4, 5))
    )
    boxes = boxes_from_instances(instances)
    annotated = np.zeros(len(boxes), dtype=bool)
    if annotate_every:
        annotated[::annotate_every] = True
    lo, hi = np.percentile(image, [1, 99.8])
    x = torch.from_numpy(((image - lo) / (hi - lo)).astype(np.float32))[None, None]
    partial = np.where(np.isin(instances, np.nonzero(annotated)[0] + 1), instances, 0)
    target = {
        "box": torch.tensor(boxes, dtype=torch.float32),
        "label": torch.zeros(len(boxes), dtype=torch.long),
        "mask_annotated": torch.from_numpy(annotated),
        "instances": torch.from_numpy(partial.astype(np.int32)),
    }
    return x, target, instances, boxes, annotated


def _flipped(x, target):
    """The same stack mirrored along x (a second, consistent training sample)."""
    size = x.shape[2]
    boxes = target["box"].clone()
    boxes[:, [0, 3]] = size - target["box"][:, [3, 0]]
    return torch.flip(x, dims=[2]), dict(target, box=boxes, instances=torch.flip(target["instances"], dims=[0]))


def test_training_returns_finite_loss_parts_and_every_part_learns():
    torch.manual_seed(0)
    x, target, *_ = _tiny_case()
    model = small_model([[14, 14, 8], [20, 20, 10]]).train()
    losses = model(x, [target])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in (
        "network.backbone.stages.0.0.weight",
        "network.head.cls_logits.weight",
        "network.head.box_regression.weight",
        "mask_branch.head.logits.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_batch_without_annotated_masks_gives_zero_mask_loss_through_the_head():
    torch.manual_seed(0)
    x, target, *_ = _tiny_case(annotate_every=0)
    model = small_model([[14, 14, 8]]).train()
    losses = model(x, [target])
    assert losses["loss_mask"].item() == 0.0
    sum(losses.values()).backward()
    head_grads = [p.grad for p in model.mask_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)  # DDP sees every parameter used


def test_eval_output_and_input_errors():
    x, *_ = _tiny_case()
    model = small_model([[14, 14, 8]], selector=BoxSelector(score_thresh=0.0)).eval()
    (out,) = model(x)
    assert set(out) == {"boxes", "scores", "labels", "instances"}
    assert out["instances"].shape == (48, 48, 16) and out["instances"].dtype == torch.int32
    k = out["boxes"].shape[0]
    assert out["scores"].shape == (k,) and out["labels"].shape == (k,)
    assert int(out["instances"].max()) == k
    assert (out["boxes"][:, 3:] <= torch.tensor([48, 48, 16])).all() and (out["boxes"][:, :3] >= 0).all()
    with pytest.raises(ValueError, match="multiple of"):
        model(torch.zeros(1, 1, 50, 48, 16))
    with pytest.raises(ValueError, match=r"\(N, C, X, Y, Z\)"):
        model(torch.zeros(1, 48, 48, 16))
    with pytest.raises(ValueError, match="one target dict per image"):
        model.train()(x)


def test_dense_network_scripts_and_anchor_shapes_travel_with_the_weights():
    model = small_model([[14, 14, 8], [20, 20, 10]]).eval()
    scripted = torch.jit.script(model.network)
    x = torch.randn(1, 1, 32, 32, 16)
    for key, value in model.network(x).items():
        assert torch.allclose(scripted(x)[key], value)
    other = small_model([[10, 10, 4], [12, 12, 6]])
    other.load_state_dict(model.state_dict())
    assert other.anchor_shapes.tolist() == [[14, 14, 8], [20, 20, 10]]
    anchors = other.anchors(x.shape[2:], torch.zeros(1, 1, 8, 8, 4))
    assert torch.allclose(anchors[0, 3:] - anchors[0, :3], torch.tensor([14.0, 14.0, 8.0]))


@pytest.mark.slow
def test_overfit_one_stack_detects_all_and_segments_annotated():
    """A few hundred CPU steps on one tiny stack: detection recall 1.0, annotated mask IoU > 0.7."""
    torch.manual_seed(0)
    x, target, instances, boxes, annotated = _tiny_case()
    xf, tf = _flipped(x, target)
    batch, targets = torch.cat([x, xf]), [target, tf]
    model = small_model(anchor_shapes_from_boxes(boxes, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = sum(model(batch, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        (out,) = model(x)
    iou = box_iou(torch.tensor(boxes, dtype=torch.float32), out["boxes"])
    assert (iou.max(dim=1).values > 0.4).all(), f"recall < 1: {iou.max(dim=1).values}"
    pred = out["instances"].numpy()
    for k in np.nonzero(annotated)[0]:
        gt = instances == k + 1
        best = max(
            ((gt & (pred == i)).sum() / (gt | (pred == i)).sum() for i in np.unique(pred[gt]) if i > 0), default=0.0
        )
        assert best > 0.7, f"instance {k}: mask IoU {best:.3f}"
