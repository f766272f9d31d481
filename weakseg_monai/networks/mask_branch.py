"""``MaskBranch``: the detector's second-stage mask part, one injected unit.

It owns the RoIAlign mask head on two backbone levels (built when the detector binds it to its dense network),
the frame each mask is predicted in (the box grown by ``context``), both mask losses (the paper's BCE with the
mask-weight layer for instances with a voxel mask, the box terms for box-only ones) and the probabilities pasted
at inference. Which RoIs train it is ``networks.mask_rois``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from weakseg_monai.losses.box_supervised_mask import BoxSupervisedMaskLoss
from weakseg_monai.losses.partial_mask import PartialMaskLoss, project_masks_on_boxes
from weakseg_monai.networks.heads import MaskHead3D
from weakseg_monai.utils.boxes import expand_boxes

MASK_ROI_CHUNK = 256  # RoIs per mask-head call at inference: memory stays bounded with thousands of detections


class MaskBranch(nn.Module):
    """Mask head, frames, mask losses and mask probabilities.

    Args:
        roi_size, mask_channels: the mask head (masks are ``2 * roi_size`` per axis).
        rois_per_image: at most this many RoIs per image enter the mask losses (split between instances with a
            voxel mask and, when ``box_mask_loss`` is on, box-only ones; ``mask_rois.split_mask_roi_budget``).
        threshold: mask probabilities above this are the object when pasted.
        context: each instance is predicted in its box grown by this share of its size on every side (a buffer):
            the frame holds background, which box-only supervision needs (the box terms pin it to 0) and which
            lets a mask reach past a box that came out too small. 0 = the paper's tight RoI.
        mask_loss: the loss of RoIs whose instance has a voxel mask, called ``(logits (K, M, M, M), targets
            (K, M, M, M), weights (K,))`` (default ``PartialMaskLoss``: the paper's mask-weight layer + BCE).
        box_mask_loss: ``BoxSupervisedMaskLoss`` for box-only instances (None: the paper's rule, no mask loss).
    """

    __jit_unused_properties__ = ["box_terms_active"]

    def __init__(
        self,
        roi_size: int = 12,
        mask_channels: int = 16,
        rois_per_image: int = 8,
        threshold: float = 0.5,
        context: float = 0.0,
        mask_loss: nn.Module | None = None,
        box_mask_loss: BoxSupervisedMaskLoss | None = None,
    ) -> None:
        super().__init__()
        self.roi_size = int(roi_size)
        self.mask_channels = int(mask_channels)
        self.rois_per_image = int(rois_per_image)
        self.threshold = float(threshold)
        self.register_buffer("context", torch.tensor(float(context)))
        self.mask_loss = mask_loss if mask_loss is not None else PartialMaskLoss()
        self.box_mask_loss = box_mask_loss
        self.head: MaskHead3D | None = None

    def bind(self, network: nn.Module) -> None:
        """Build the mask head for ``network``'s fine and detection levels (``VoxResDetectorNet``)."""
        backbone = network.backbone
        cumulative = backbone.cumulative_strides()
        fine, coarse = network.fine_level, network.detection_level
        self.head = MaskHead3D(
            backbone.channels[fine],
            backbone.channels[coarse],
            [1.0 / s for s in cumulative[fine]],
            [1.0 / s for s in cumulative[coarse]],
            roi_size=self.roi_size,
            mask_channels=self.mask_channels,
            norm=network.norm,
        )

    @property
    def box_terms_active(self) -> bool:
        """Whether box-only instances get the box terms (else the paper's rule: no mask loss for them)."""
        return self.box_mask_loss is not None and self.box_mask_loss.active

    def frames(self, boxes: Tensor) -> Tensor:
        """``(K, 6)`` the frames the head predicts (and masks are pasted) in: ``boxes`` grown by ``context``."""
        return expand_boxes(boxes, float(self.context))

    @torch.no_grad()
    def probabilities(self, fine: Tensor, coarse: Tensor, frames: Tensor) -> Tensor:
        """``(K, M, M, M)`` mask probabilities in the ``(K, 6)`` frames of one image (``fine``/``coarse``: batch 1)."""
        rois = torch.cat([torch.zeros_like(frames[:, :1]), frames], dim=1)
        chunks = [self.head(fine, coarse, part)[:, 0] for part in rois.split(MASK_ROI_CHUNK)]
        if not chunks:
            return torch.zeros((0, *(self.head.mask_size,) * 3), device=frames.device)
        return torch.sigmoid(torch.cat(chunks).float())

    def losses(self, out, images, targets, roi_boxes, roi_batch, roi_ids, roi_weights, roi_gt) -> dict:
        """``loss_mask`` (the paper's BCE over RoIs of weight 1) and, when the box terms are on,
        ``loss_mask_box`` (BoxInst terms over the box-only RoIs, weight 0)."""
        box_terms = self.box_terms_active
        if not roi_boxes:
            # no supervised RoI in the batch: one zero-weight RoI keeps the mask head in the graph
            whole = torch.tensor([[0.0, 0.0, 0.0, 0.0, *[float(s) for s in images.shape[2:]]]], device=images.device)
            logits = self.head(out["fine"], out["coarse"], whole)
            zero = self.mask_loss(logits[:, 0], torch.zeros_like(logits[:, 0]), torch.zeros(1, device=images.device))
            return {"loss_mask": zero, **({"loss_mask_box": zero * 0.0} if box_terms else {})}
        boxes = self.frames(torch.cat(roi_boxes))
        batch = torch.cat(roi_batch)
        ids = torch.cat(roi_ids)
        weights = torch.cat(roi_weights)
        rois = torch.cat([batch[:, None].to(boxes.dtype), boxes], dim=1)
        head_only = (weights == 0) if box_terms and not self.box_mask_loss.train_backbone else None
        logits = self._roi_logits(out, rois, head_only)
        volumes = torch.stack([t["instances"].to(images.device) for t in targets])
        mask_targets = project_masks_on_boxes(volumes, ids, boxes, self.head.mask_size, batch)
        losses = {"loss_mask": self.mask_loss(logits[:, 0], mask_targets, weights)}
        if box_terms:
            box_only = weights == 0
            losses["loss_mask_box"] = self.box_mask_loss(
                logits[box_only, 0], rois[box_only], torch.cat(roi_gt)[box_only], images
            )
        return losses

    def _roi_logits(self, out: dict[str, Tensor], rois: Tensor, head_only: Tensor | None) -> Tensor:
        """``(K, 1, M, M, M)`` mask logits of ``rois (K, 7)``; the RoIs flagged in ``head_only (K,)`` see the
        backbone's features detached, so their loss trains the mask head and not the features detection shares."""
        if head_only is None or not head_only.any():
            return self.head(out["fine"], out["coarse"], rois)
        shared, alone = torch.nonzero(~head_only).squeeze(1), torch.nonzero(head_only).squeeze(1)
        logits = self.head(out["fine"].detach(), out["coarse"].detach(), rois[alone])
        if shared.numel():
            logits = torch.cat([self.head(out["fine"], out["coarse"], rois[shared]), logits])
        return logits[torch.argsort(torch.cat([shared, alone]))]
