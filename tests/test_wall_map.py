"""Parts of the wall-map (``boundary``) family of issue 25: weak targets, the masked loss, the watershed stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weakseg_monai.data.instances import boxes_from_instances
from weakseg_monai.data.wall_targets import BACKGROUND, IGNORE, INTERIOR, WALL, weak_wall_classes
from weakseg_monai.losses.masked_wall import MaskedWallLoss
from weakseg_monai.networks.watershed import wall_watershed


def cell_grid(cells: int = 3, size: int = 10, wall: int = 1, margin: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``cells``^3 cubic cells of ``size`` voxels separated by walls ``wall`` thick, in a background margin:
    (instances (X, Y, Z) int32, walls (X, Y, Z) bool)."""
    pitch = size + wall
    n = margin * 2 + cells * pitch + wall
    instances = np.zeros((n, n, n), dtype=np.int32)
    walls = np.zeros((n, n, n), dtype=bool)
    tissue = slice(margin, margin + cells * pitch + wall)
    walls[tissue, tissue, tissue] = True
    label = 0
    for i in range(cells):
        for j in range(cells):
            for k in range(cells):
                label += 1
                lo = [margin + wall + a * pitch for a in (i, j, k)]
                region = tuple(slice(v, v + size) for v in lo)
                instances[region] = label
                walls[region] = False
    return instances, walls


def test_weak_targets_say_wall_and_interior_only_where_the_annotation_does():
    instances, _ = cell_grid(cells=2, size=8)
    boxes = boxes_from_instances(instances)
    annotated = np.zeros(len(boxes), dtype=bool)
    annotated[[0, 5]] = True
    partial = np.where(np.isin(instances, [1, 6]), instances, 0)  # only the annotated masks are painted
    classes = weak_wall_classes(partial, boxes, annotated)
    one = instances == 1
    assert (classes[one & (classes == WALL)].size > 0) and (classes[one] != IGNORE).all()
    assert set(np.unique(classes[one])) == {INTERIOR, WALL}
    outside = np.ones(instances.shape, dtype=bool)
    for box in boxes.astype(int):
        outside[box[0] : box[3], box[1] : box[4], box[2] : box[5]] = False
    assert (classes[outside] == BACKGROUND).all() and outside.any()
    two = instances == 2  # box only: an interior core, the rest (its rim and walls) unknown
    assert (classes[two] == INTERIOR).any() and (classes[two] == IGNORE).any() and not (classes[two] == WALL).any()
    centre = tuple(int(v) for v in (boxes[1, :3] + boxes[1, 3:]) // 2)
    assert classes[centre] == INTERIOR


def test_the_masked_wall_loss_gives_no_gradient_where_nothing_is_annotated():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 6, 6, 4, requires_grad=True)
    target = torch.full((1, 1, 6, 6, 4), IGNORE, dtype=torch.uint8)
    target[0, 0, :3] = torch.randint(0, 3, (3, 6, 4), dtype=torch.uint8)
    loss = MaskedWallLoss()(logits, target)
    loss.backward()
    grad = logits.grad
    assert torch.isfinite(loss) and loss > 0
    assert (grad[:, :, 3:] == 0).all(), "ignored voxels got a gradient"
    assert (grad[:, :, :3].abs().sum(dim=1) > 0).all()
    shifted = logits.detach().clone()
    shifted[:, :, 3:] += 5.0
    assert torch.allclose(MaskedWallLoss()(shifted, target), loss.detach())
    empty = torch.full_like(target, IGNORE)
    zero = MaskedWallLoss()(logits, empty)
    assert zero.item() == 0.0 and zero.requires_grad


def test_the_balanced_wall_loss_weighs_each_annotated_class_equally_and_ignores_the_rest():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8, 4, requires_grad=True)
    target = torch.full((1, 1, 8, 8, 4), IGNORE, dtype=torch.uint8)
    target[0, 0, :6] = INTERIOR  # 192 interior voxels
    target[0, 0, 6, :2] = WALL  # 8 wall voxels
    loss = MaskedWallLoss(class_weights="balanced")(logits, target)
    loss.backward()
    grad = logits.grad[0].abs().sum(dim=0)
    assert (grad[7] == 0).all() and (grad[6, 2:] == 0).all(), "ignored voxels got a gradient"
    # equal total weight per class: the 8 wall voxels together pull as hard as the 192 interior ones
    wall, interior = grad[6, :2].sum(), grad[:6].sum()
    assert 0.3 < float(wall / interior) < 3.0
    plain = torch.autograd.grad(MaskedWallLoss()(logits, target), logits)[0][0].abs().sum(dim=0)
    assert float(plain[6, :2].sum() / plain[:6].sum()) < 0.2  # unweighted, walls barely count
    with pytest.raises(ValueError, match="balanced"):
        MaskedWallLoss(class_weights="equal")


def test_the_watershed_follows_known_walls_even_through_a_one_voxel_gap():
    instances, walls = cell_grid(cells=3, size=10)
    gap = (instances.shape[0] // 2, 20, 20)
    walls_gap = walls.copy()
    tissue = (instances > 0) | walls
    # a one-voxel hole in the wall between two cells, along x
    x = np.nonzero(walls[:, gap[1], gap[2]] & tissue[:, gap[1], gap[2]])[0]
    inner = [v for v in x if 0 < instances[v - 1, gap[1], gap[2]] != instances[v + 1, gap[1], gap[2]] > 0]
    walls_gap[inner[0], gap[1], gap[2]] = False
    rng = np.random.default_rng(0)
    wall_p = np.clip(walls_gap * 0.9 + rng.normal(0, 0.05, walls.shape), 0, 1)
    background_p = np.where(tissue, 0.02, 0.95)
    interior_p = np.clip(1 - wall_p - background_p, 0, 1)
    probs = np.stack([background_p, interior_p, wall_p]).astype(np.float32)
    labels = wall_watershed(probs)
    assert labels.max() == instances.max() == 27
    found = []
    for cell in range(1, 28):  # each cell's voxels in one instance of their own (the walls are shared out)
        inside = labels[instances == cell]
        found.append(np.bincount(inside).argmax())
        assert found[-1] > 0 and (inside == found[-1]).mean() > 0.95, cell
    assert len(set(found)) == 27
    assert (labels[~tissue] == 0).all() and (labels[walls] > 0).mean() > 0.9
