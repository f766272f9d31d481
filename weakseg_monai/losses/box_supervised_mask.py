"""Box-supervised mask loss for instances without a voxel mask: BoxInst (Tian et al., CVPR 2021) in 3D.

The paper's mask-weight layer gives box-only instances no mask loss at all. BoxInst shows that a box alone
still says two things about the mask, and both carry to 3D:

- **projection term**: the mask's maximum along each axis must fill the box's projection on the other two
  axes and nothing else. With ``p`` the predicted probabilities in the RoI's ``M³`` grid and ``b`` the GT
  box drawn into that grid, ``dice(max_z p̄, max_z b) + dice(max_y p̄, max_y b) + dice(max_x p̄, max_x b)``
  (the xy, xz and yz projections, ``projection_dims=2``; ``1`` takes profiles along each axis instead, which
  only ask the object to touch all six faces), averaged over RoIs. ``p̄`` is ``p`` after a 3³ local mean
  (``projection_smoothing``): on raw maxima, sparse diagonal stripes (which the mask head's transposed
  convolution produces readily) fill every projection as well as a solid object does, and that is what the
  head learned from boxes alone; a local mean lets only solid regions reach 1. A mask filling the box costs 0;
- **outside term**: voxels of the RoI grid outside the GT box are certainly not this instance: mean BCE towards
  0 there. This needs a grid larger than the box (``WeakInstanceSegNet(mask_context > 0)``); with a tight RoI
  nothing would tell the corners of a box from the object (a mask filling the box has zero loss);
- **pairwise term**: neighbouring voxels of similar intensity (``exp(-|I_i - I_j| / sigma) >= tau`` on the
  normalised image sampled into the same grid by our RoIAlign) should share a label: ``-log P(y_i = y_j)``
  with ``P = p_i p_j + (1 - p_i)(1 - p_j)``, over 3D neighbours at the given dilations, counted for pairs with
  at least one voxel inside the GT box (as BoxInst), so the outside background spreads into the box's corners.
  It is ramped in over ``warmup_iterations``.

Nothing here knows about anchors or data loaders: RoI boxes, GT boxes, logits and the image patch in, a
scalar out (the shape of torchvision's ``maskrcnn_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weakseg_monai.layers.roi_align import roi_align_3d


def box_in_roi_grid(gt_boxes: Tensor, rois: Tensor, mask_size: int) -> Tensor:
    """``(R, M, M, M)`` {0, 1}: the voxels of each RoI's ``M³`` grid whose centres lie inside its GT box.

    Args:
        gt_boxes: ``(R, 6)`` the GT box of each RoI; rois: ``(R, 6)`` the RoI boxes (both StandardMode voxels).
    """
    steps = (torch.arange(mask_size, device=rois.device, dtype=torch.float32) + 0.5) / mask_size
    inside = []
    for a in range(3):
        centres = rois[:, a : a + 1] + steps[None] * (rois[:, a + 3 : a + 4] - rois[:, a : a + 1])  # (R, M)
        inside.append((centres >= gt_boxes[:, a : a + 1]) & (centres < gt_boxes[:, a + 3 : a + 4]))
    x, y, z = inside
    return (x[:, :, None, None] & y[:, None, :, None] & z[:, None, None, :]).to(torch.float32)


def _dice_loss(pred: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """``1 - 2|P∩T| / (|P|² + |T|²)`` per RoI (BoxInst's squared form), inputs ``(R, ...)``."""
    dims = tuple(range(1, pred.ndim))
    inter = (pred * target).sum(dims)
    union = (pred * pred).sum(dims) + (target * target).sum(dims)
    return 1.0 - 2.0 * inter / (union + eps)


def projection_loss(mask_probs: Tensor, box_masks: Tensor, dims: int = 2) -> Tensor:
    """Mean over RoIs and axes of the dice loss between mask and box projections (see the module docstring).

    Args:
        mask_probs: ``(R, M, M, M)`` predicted probabilities; box_masks: ``(R, M, M, M)`` from ``box_in_roi_grid``.
        dims: 1 = the maximum over two axes, a profile along each axis (x, y, z); 2 = the maximum along one
            axis, an image on each axis pair (xy, xz, yz).
    """
    if mask_probs.shape[0] == 0:
        return mask_probs.sum() * 0.0
    if dims not in (1, 2):
        raise ValueError(f"projection dims must be 1 or 2, got {dims}")
    reduce = [(2, 3), (1, 3), (1, 2)] if dims == 1 else [(3,), (2,), (1,)]
    terms = [_dice_loss(mask_probs.amax(dim=axes), box_masks.amax(dim=axes)) for axes in reduce]
    return torch.stack(terms).mean()


def outside_loss(mask_logits: Tensor, box_masks: Tensor) -> Tensor:
    """Mean BCE towards 0 over the RoI grid's voxels outside the GT box (certainly not this instance)."""
    outside = box_masks <= 0
    if not outside.any():
        return mask_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(mask_logits[outside], torch.zeros_like(mask_logits[outside]))


def neighbour_offsets(dilations: Sequence[int]) -> list[tuple[int, int, int]]:
    """The 13 half-neighbourhood directions of the 3x3x3 cube (each pair once) at every dilation."""
    directions = [
        (dx, dy, dz)
        for dx in (-1, 0, 1)
        for dy in (-1, 0, 1)
        for dz in (-1, 0, 1)
        if (dx, dy, dz) > (0, 0, 0)
    ]
    return [(d * dx, d * dy, d * dz) for d in dilations for dx, dy, dz in directions]


def _shifted_pair(x: Tensor, offset: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Views ``(a, b)`` of ``x (R, M, M, M)`` where ``b`` is ``a``'s neighbour at ``offset`` (overlap only)."""
    src, dst = [slice(None)], [slice(None)]
    for o, size in zip(offset, x.shape[1:]):
        src.append(slice(max(0, -o), size - max(0, o)))
        dst.append(slice(max(0, o), size - max(0, -o)))
    return x[tuple(src)], x[tuple(dst)]


def pairwise_loss(
    mask_logits: Tensor,
    image_patches: Tensor,
    box_masks: Tensor,
    dilations: Sequence[int] = (1, 2),
    sigma: float = 0.1,
    tau: float = 0.3,
    both_inside: bool = False,
) -> Tensor:
    """Mean of ``-log P(y_i = y_j)`` over similar neighbour pairs touching the GT box (0 when there are none).

    Args:
        mask_logits: ``(R, M, M, M)``; image_patches: ``(R, M, M, M)`` the normalised image in the same grid;
        box_masks: ``(R, M, M, M)``.
        both_inside: count only pairs with both voxels in the box; default: at least one (as BoxInst), so the
            background the projection term fixes outside the box spreads into the box's corners.
    """
    log_fg = F.logsigmoid(mask_logits)
    log_bg = F.logsigmoid(-mask_logits)
    total = mask_logits.sum() * 0.0
    count = torch.zeros((), device=mask_logits.device)
    for offset in neighbour_offsets(dilations):
        fg_a, fg_b = _shifted_pair(log_fg, offset)
        bg_a, bg_b = _shifted_pair(log_bg, offset)
        img_a, img_b = _shifted_pair(image_patches, offset)
        box_a, box_b = _shifted_pair(box_masks, offset)
        touching = (box_a > 0) & (box_b > 0) if both_inside else (box_a > 0) | (box_b > 0)
        similar = (torch.exp(-(img_a - img_b).abs() / sigma) >= tau) & touching
        log_same = torch.logaddexp(fg_a + fg_b, bg_a + bg_b)
        total = total - (log_same * similar).sum()
        count = count + similar.sum()
    return total / count.clamp(min=1)


class BoxSupervisedMaskLoss(nn.Module):
    """The box terms for box-only RoIs:
    ``weight * (projection + outside_weight * outside + ramp * pairwise_weight * pairwise)``.

    ``ramp`` grows linearly from 0 to 1 over ``warmup_iterations`` training calls (as BoxInst warms its
    pairwise term up), counted by the module itself.

    Args:
        weight: ``box_mask_loss_weight`` (0 switches the box terms off: the paper's behaviour).
        pairwise_weight: weight of the pairwise term relative to the projection term.
        dilations, sigma, tau: the pairwise neighbourhood and intensity-similarity rule.
        projection_dims: 2 = images on each axis pair (BoxInst's projections in 3D), 1 = profiles along each axis.
        projection_smoothing: size of the local mean taken before projecting (1 = none).
        outside_weight: weight of the BCE towards 0 outside the GT box (needs ``mask_context > 0`` on the model).
        train_backbone: whether the box terms' gradients reach the backbone (BoxInst: yes) or the mask head only.
            Boxes are weak mask supervision; where voxel masks lead, through the shared features they cost
            detection and the voxel-mask instances accuracy (``train.json`` plans this, see
            ``weakseg_monai.planning.planner.plan_box_terms_train_backbone``).
    """

    def __init__(
        self,
        weight: float = 1.0,
        pairwise_weight: float = 1.0,
        warmup_iterations: int = 200,
        dilations: Sequence[int] = (1, 2),
        sigma: float = 0.1,
        tau: float = 0.3,
        projection_dims: int = 2,
        projection_smoothing: int = 3,
        outside_weight: float = 1.0,
        train_backbone: bool = True,
    ) -> None:
        super().__init__()
        self.train_backbone = bool(train_backbone)
        self.outside_weight = float(outside_weight)
        self.projection_dims = int(projection_dims)
        self.projection_smoothing = int(projection_smoothing)
        self.weight = float(weight)
        self.pairwise_weight = float(pairwise_weight)
        self.warmup_iterations = int(warmup_iterations)
        self.dilations = tuple(int(d) for d in dilations)
        self.sigma = float(sigma)
        self.tau = float(tau)
        self.calls = 0

    @property
    def active(self) -> bool:
        return self.weight > 0

    def image_patches(self, images: Tensor, rois: Tensor, mask_size: int) -> Tensor:
        """``(R, M, M, M)`` image values in each RoI's mask grid (``rois``: ``(R, 7)`` with batch index)."""
        return roi_align_3d(images, rois, mask_size, 1.0, 2, True)[:, 0]

    @torch.jit.unused  # training only: an exported (scripted) network never calls its losses
    def forward(self, mask_logits: Tensor, rois: Tensor, gt_boxes: Tensor, images: Tensor) -> Tensor:
        """Args: ``mask_logits (R, M, M, M)``; ``rois (R, 7)`` (batch index + box); ``gt_boxes (R, 6)``;
        ``images (N, 1, X, Y, Z)`` normalised. Returns a scalar (0 through the graph when ``R == 0``)."""
        if self.training:
            self.calls += 1
        if mask_logits.shape[0] == 0 or not self.active:
            return mask_logits.sum() * 0.0
        size = mask_logits.shape[-1]
        boxes = box_in_roi_grid(gt_boxes.float(), rois[:, 1:].float(), size)
        probs = torch.sigmoid(mask_logits.float())
        projected = probs
        if self.projection_smoothing > 1:  # a local mean first: thin stripes cannot reach 1, solid regions can
            k = self.projection_smoothing
            projected = F.avg_pool3d(probs[:, None], k, stride=1, padding=k // 2, count_include_pad=False)[:, 0]
        loss = projection_loss(projected, boxes, self.projection_dims)
        if self.outside_weight > 0:
            loss = loss + self.outside_weight * outside_loss(mask_logits.float(), boxes)
        if self.pairwise_weight > 0:
            # the pairwise term is ramped in (BoxInst): early on it would freeze whatever uniform label the
            # untrained head starts from, before the projection term has pinned the background
            ramp = min(1.0, self.calls / self.warmup_iterations) if self.warmup_iterations > 0 else 1.0
            patches = self.image_patches(images.float(), rois.float(), size).detach()
            pairwise = pairwise_loss(mask_logits.float(), patches, boxes, self.dilations, self.sigma, self.tau)
            loss = loss + ramp * self.pairwise_weight * pairwise
        return self.weight * loss
