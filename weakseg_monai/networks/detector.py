"""The whole model of Zhao et al. (MICCAI 2018) as one ``nn.Module``, in torchvision-detection style.

``VoxResDetectorNet`` is the dense, TorchScript-friendly part (backbone + detection head: images in,
tensors out) that a bundle exports and a sliding-window inferer runs. ``WeakInstanceSegNet`` wraps it
with anchors, the paper's matching, L_box, the RoIAlign mask head with the partial-mask loss, and
post-processing:

- training: ``model(images, targets) -> {"loss_cls", "loss_box_reg", "loss_mask"}`` (L is their sum);
- eval: ``model(images) -> [{"boxes", "scores", "labels", "instances"}, ...]`` one dict per image.

Targets, one dict per image, spatial values (x, y, z), boxes StandardMode in voxels:
``box (G, 6)``, ``label (G,)`` dataset labels (0 = first class), ``mask_annotated (G,)`` bool,
``instances (X, Y, Z)`` label volume holding the voxels of the annotated instances, optional
``instance_id (G,)`` the value of box ``k``'s voxels in ``instances`` (default ``k + 1``), optional
``box_ignore (G,)`` bool for boxes a crop cut too much.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.data.box_utils import clip_boxes_to_image
from torch import Tensor, nn

from weakseg_monai.conventions import label_to_class_index
from weakseg_monai.families.registry import ModelFamily, register_family
from weakseg_monai.losses.box_loss import box_loss
from weakseg_monai.losses.box_supervised_mask import BoxSupervisedMaskLoss
from weakseg_monai.losses.partial_mask import PartialMaskLoss, project_masks_on_boxes
from weakseg_monai.networks.backbone import VoxResBackbone, check_divisible
from weakseg_monai.networks.family import InstanceModel
from weakseg_monai.networks.heads import DetectionHead3D, MaskHead3D, flatten_anchor_outputs
from weakseg_monai.networks.mask_rois import split_mask_roi_budget, training_mask_rois  # noqa: F401 (re-exported)
from weakseg_monai.networks.postprocess import BoxSelector
from weakseg_monai.utils.anchors import make_anchor_generator
from weakseg_monai.utils.boxes import expand_boxes
from weakseg_monai.utils.matching import POSITIVE_IOU, AnchorAssigner

DEFAULT_ANCHOR_SHAPES = ((12.0, 12.0, 6.0), (18.0, 18.0, 10.0), (24.0, 24.0, 12.0))
# in-plane-only stride in the stem (z is coarse at the working spacing), detection at stride (4, 4, 2)
DEFAULT_CHANNELS = (16, 32, 48)
DEFAULT_STRIDES = ((2, 2, 1), (2, 2, 2), (2, 2, 2))
DEFAULT_BLOCKS = (1, 2, 2)
# the stride of the detection level (backbone level 1): anchors sit at i * stride + stride // 2 of the input grid
DETECTION_STRIDE = tuple(int(np.prod([s[a] for s in DEFAULT_STRIDES[:2]])) for a in range(3))
MASK_ROI_CHUNK = 256  # RoIs per mask-head call at inference: memory stays bounded with thousands of detections


class VoxResDetectorNet(nn.Module):
    """Backbone + detection head: ``(N, C, X, Y, Z)`` -> dict of tensors.

    Keys: ``cls_logits (N, c·r, m, n, k)``, ``box_regression (N, 6·r, m, n, k)`` on the detection level,
    ``fine`` and ``coarse`` feature maps for the mask head.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        num_anchors: int = 3,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        strides: Sequence[Sequence[int]] = DEFAULT_STRIDES,
        blocks: Sequence[int] = DEFAULT_BLOCKS,
        detection_level: int = 1,
        fine_level: int = 0,
        norm: str | tuple = ("group", {"num_groups": 8}),
    ) -> None:
        super().__init__()
        self.backbone = VoxResBackbone(in_channels, channels, strides, blocks, norm)
        self.detection_level = detection_level
        self.fine_level = fine_level
        self.num_classes = num_classes
        self.norm = norm
        self.head = DetectionHead3D(self.backbone.channels[detection_level], num_anchors, num_classes + 1, norm=norm)

    def set_num_anchors(self, num_anchors: int) -> None:
        """A new (untrained) detection head for ``num_anchors`` anchor shapes, on the old head's device: the plan
        sets the anchor count, and a checkpoint of another count loads into a default-built model."""
        device = next(self.head.parameters()).device
        channels = self.backbone.channels[self.detection_level]
        self.head = DetectionHead3D(channels, num_anchors, self.num_classes + 1, norm=self.norm).to(device)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        feats = self.backbone(images)
        coarse = feats[self.detection_level]
        cls_logits, box_regression = self.head(coarse)
        return {
            "cls_logits": cls_logits,
            "box_regression": box_regression,
            "fine": feats[self.fine_level],
            "coarse": coarse,
        }


class WeakInstanceSegNet(InstanceModel):
    """Anchor-based 3D detector + RoIAlign mask head trained from boxes and partial masks: the ``nuclei`` family.

    Args:
        num_classes: object classes (without background).
        anchor_shapes: anchor sizes (x, y, z) in voxels at the working spacing (see
            ``weakseg_monai.utils.anchors.anchor_shapes_from_boxes``); stored in the state dict.
        channels, strides, blocks: backbone stages (see ``VoxResBackbone``).
        detection_level, fine_level: backbone levels of the detection head (also the coarse RoIAlign level)
            and of the fine RoIAlign level.
        roi_size, mask_channels: mask head (masks are ``2 * roi_size`` per axis).
        positive_iou, negative_iou: anchor matching (paper: 0.4, no ignore band).
        adaptive_candidates: the paper's positives plus MONAI's ATSS positives from this many nearest anchor
            locations (``weakseg_monai.utils.matching``: boxes no anchor shape fits, such as face-cut slivers,
            get several positives instead of one); None: the paper's rule alone.
        neg_pos_ratio, min_negatives, hard_negatives: anchor sampling for the log loss.
        reg_weight, smooth_l1_beta: λ and the smooth-L1 transition of L_box.
        mask_rois_per_image: at most this many RoIs per image enter the mask losses (split between instances
            with a voxel mask and, when ``box_mask_loss`` is on, box-only ones; see ``split_mask_roi_budget``).
        mask_context: the mask head predicts each instance in its box grown by this share of its size on every
            side (a buffer): the frame holds background around the object, which box-only supervision needs
            (the box terms pin it to 0) and which lets a mask reach past a box that came out too small. 0 = the
            paper's tight RoI (and what checkpoints without this buffer were trained with).
        mask_loss: the loss of RoIs whose instance has a voxel mask, called ``(logits (K, M, M, M), targets
            (K, M, M, M), weights (K,))`` (default ``PartialMaskLoss``: the paper's mask-weight layer + BCE).
        box_mask_loss: ``BoxSupervisedMaskLoss`` for box-only instances (None: the paper's mask-weight rule
            alone, box-only instances get no mask loss).
        score_thresh, nms_thresh, topk_candidates, detections_per_image, mask_threshold: inference (the two
            limits per 128 x 128 x 32 working voxels, scaled with the volume; a warning says when they cut).
        working_spacing: (x, y, z) µm the model is trained and run at; intensity_percentiles: the per-image
            normalisation rule (lower, upper percentiles mapped to 0, 1). These, ``anchor_shapes``,
            ``score_thresh`` and ``nms_thresh`` are buffers, so a checkpoint carries the whole plan inference
            needs (see ``weakseg_monai.planning``); a checkpoint written before the thresholds were buffers
            loads with the constructor's values for them.
    """

    family = "nuclei"
    # buffers added after the first checkpoints shipped: filled from the constructor when a state dict lacks them
    LATE_BUFFERS = ("score_thresh", "nms_thresh", "mask_context")
    # training-only properties TorchScript must not compile (ckpt_export scripts the export subclass)
    __jit_unused_properties__ = ["box_terms_active"]

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        anchor_shapes: Sequence[Sequence[float]] = DEFAULT_ANCHOR_SHAPES,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        strides: Sequence[Sequence[int]] = DEFAULT_STRIDES,
        blocks: Sequence[int] = DEFAULT_BLOCKS,
        detection_level: int = 1,
        fine_level: int = 0,
        norm: str | tuple = ("group", {"num_groups": 8}),
        roi_size: int = 12,
        mask_channels: int = 16,
        positive_iou: float = POSITIVE_IOU,
        negative_iou: float | None = None,
        adaptive_candidates: int | None = 9,
        neg_pos_ratio: float = 3.0,
        min_negatives: int = 32,
        hard_negatives: bool = True,
        reg_weight: float = 1.0,
        smooth_l1_beta: float = 1.0 / 9.0,
        mask_rois_per_image: int = 8,
        score_thresh: float = 0.5,
        nms_thresh: float = 0.3,
        topk_candidates: int = 1000,
        detections_per_image: int = 300,
        mask_threshold: float = 0.5,
        mask_context: float = 0.0,
        mask_loss: nn.Module | None = None,
        box_mask_loss: BoxSupervisedMaskLoss | None = None,
        working_spacing: Sequence[float] = (0.5, 0.5, 1.0),
        intensity_percentiles: Sequence[float] = (1.0, 99.8),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        # what the model learned from the data travels with its weights (state dict buffers)
        self.register_buffer("anchor_shapes", torch.tensor([[float(v) for v in s] for s in anchor_shapes]))
        self.register_buffer("working_spacing", torch.tensor([float(v) for v in working_spacing]))
        self.register_buffer("intensity_percentiles", torch.tensor([float(v) for v in intensity_percentiles]))
        # thresholds are planned (NMS) and calibrated on validation (score) per dataset: buffers too
        self.register_buffer("score_thresh", torch.tensor(float(score_thresh)))
        self.register_buffer("nms_thresh", torch.tensor(float(nms_thresh)))
        # the mask head's frame: each box grown by this share of its size per side, in training and inference
        self.register_buffer("mask_context", torch.tensor(float(mask_context)))
        make_anchor_generator(self.anchor_shapes.tolist())  # validates the shapes
        self.network = VoxResDetectorNet(
            in_channels, num_classes, len(anchor_shapes), channels, strides, blocks, detection_level, fine_level, norm
        )
        cumulative = self.network.backbone.cumulative_strides()
        self.fine_stride = cumulative[self.network.fine_level]
        self.coarse_stride = cumulative[self.network.detection_level]
        self.mask_head = MaskHead3D(
            self.network.backbone.channels[self.network.fine_level],
            self.network.backbone.channels[self.network.detection_level],
            [1.0 / s for s in self.fine_stride],
            [1.0 / s for s in self.coarse_stride],
            roi_size=roi_size,
            mask_channels=mask_channels,
            norm=norm,
        )
        self.box_coder = BoxCoder(weights=(1.0,) * 6)
        # the target assigner and sampler, and the box selector: parts with their own small constructors
        self.assigner = AnchorAssigner(
            positive_iou, negative_iou, adaptive_candidates, neg_pos_ratio, min_negatives, hard_negatives
        )
        self.reg_weight = reg_weight
        self.smooth_l1_beta = smooth_l1_beta
        self.mask_rois_per_image = mask_rois_per_image
        self.selector = BoxSelector(topk_candidates, detections_per_image)
        self.mask_threshold = mask_threshold
        # the two owners of mask supervision: voxel masks (the paper's BCE) and, for box-only instances, the box
        # terms (3D BoxInst; None or weight 0 = the paper: no mask loss for them)
        self.mask_loss = mask_loss if mask_loss is not None else PartialMaskLoss()
        self.box_mask_loss = box_mask_loss

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        for name in self.LATE_BUFFERS:
            state_dict.setdefault(prefix + name, getattr(self, name).detach().clone())
        shapes = state_dict.get(prefix + "anchor_shapes")
        if isinstance(shapes, torch.Tensor) and shapes.ndim == 2 and shapes.shape != self.anchor_shapes.shape:
            # the plan chose another number of anchor shapes: resize before the head's weights load (the children
            # load after this module's own entries)
            self.anchor_shapes = torch.zeros_like(shapes, device=self.anchor_shapes.device)
            self.network.set_num_anchors(int(shapes.shape[0]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    # ------------------------------------------------------------------ helpers
    def size_divisor(self) -> tuple[int, int, int]:
        return self.network.backbone.size_divisor()

    def anchors(self, spatial_size: Sequence[int], level: Tensor) -> Tensor:
        """``(A, 6)`` anchors of the detection level for an input of ``spatial_size`` (same for every image)."""
        generator = make_anchor_generator(self.anchor_shapes.tolist())
        shape_only = torch.empty((1, 1, *[int(s) for s in spatial_size]), device="meta")
        return generator(shape_only, [level[:1]])[0]

    def dense_outputs(self, images: Tensor) -> dict[str, Tensor]:
        check_divisible(images.shape[2:], self.size_divisor())
        return self.network(images)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        if images.ndim != 5:
            raise ValueError(f"images must be (N, C, X, Y, Z), got {tuple(images.shape)}")
        if self.training and (targets is None or len(targets) != images.shape[0]):
            raise ValueError("training needs one target dict per image")
        out = self.dense_outputs(images)
        if not self.training:
            return self.detect(out, images.shape[2:])
        anchors = self.anchors(images.shape[2:], out["cls_logits"])
        cls_logits = flatten_anchor_outputs(out["cls_logits"], self.num_classes + 1)
        box_deltas = flatten_anchor_outputs(out["box_regression"], 6)
        return self.compute_losses(images, out, anchors, cls_logits, box_deltas, targets)

    def compute_losses(
        self,
        images: Tensor,
        out: dict[str, Tensor],
        anchors: Tensor,
        cls_logits: Tensor,
        box_deltas: Tensor,
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        n, num_anchors = cls_logits.shape[:2]
        spatial = images.shape[2:]
        all_pos, all_neg, all_classes, all_deltas = [], [], [], []
        roi_boxes, roi_batch, roi_ids, roi_weights, roi_gt = [], [], [], [], []
        for i, target in enumerate(targets):
            gt_boxes = target["box"].to(anchors)
            gt_labels = target["label"].long().to(anchors.device)
            annotated = target.get("mask_annotated", torch.zeros(len(gt_boxes), dtype=torch.bool)).bool()
            annotated = annotated.to(anchors.device)
            default_ids = torch.arange(1, len(gt_boxes) + 1, device=anchors.device)
            instance_ids = target.get("instance_id", default_ids).long().to(anchors.device)
            matched, pos, neg = self.assigner(
                anchors, gt_boxes, target.get("box_ignore"), len(self.anchor_shapes), cls_logits[i]
            )
            classes = torch.zeros(num_anchors, dtype=torch.long, device=anchors.device)
            classes[pos] = label_to_class_index(gt_labels[matched[pos]])
            all_pos.append(pos + i * num_anchors)
            all_neg.append(neg + i * num_anchors)
            all_classes.append(classes)
            all_deltas.append(self.box_coder.encode_single(gt_boxes[matched[pos]], anchors[pos]))

            proposals = self.box_coder.decode_single(box_deltas[i, pos].detach().float(), anchors[pos])
            proposals, _ = clip_boxes_to_image(proposals, spatial, remove_empty=False)
            ignored = target.get("box_ignore", torch.zeros(len(gt_boxes), dtype=torch.bool)).bool()
            boxes, gt_index = training_mask_rois(
                proposals, gt_boxes, matched[pos], annotated, ignored.to(anchors.device), self.box_terms_active,
                self.mask_rois_per_image,
            )
            if gt_index.numel():
                roi_boxes.append(boxes)
                roi_batch.append(torch.full((gt_index.numel(),), i, dtype=torch.long, device=anchors.device))
                roi_ids.append(instance_ids[gt_index])
                roi_weights.append(annotated[gt_index].float())
                roi_gt.append(gt_boxes[gt_index])

        loss_cls, loss_reg = box_loss(
            cls_logits.reshape(-1, cls_logits.shape[-1]),
            box_deltas.reshape(-1, 6),
            torch.cat(all_classes),
            torch.cat(all_deltas),
            torch.cat(all_pos),
            torch.cat(all_neg),
            self.reg_weight,
            self.smooth_l1_beta,
        )
        losses = {"loss_cls": loss_cls, "loss_box_reg": loss_reg}
        losses.update(self._mask_losses(out, images, targets, roi_boxes, roi_batch, roi_ids, roi_weights, roi_gt))
        return losses

    def _mask_losses(self, out, images, targets, roi_boxes, roi_batch, roi_ids, roi_weights, roi_gt) -> dict:
        """``loss_mask`` (the paper's BCE over RoIs of weight 1) and, when the box terms are on,
        ``loss_mask_box`` (BoxInst terms over the box-only RoIs, weight 0)."""
        box_terms = self.box_terms_active
        if not roi_boxes:
            # no supervised RoI in the batch: one zero-weight RoI keeps the mask head in the graph
            whole = torch.tensor([[0.0, 0.0, 0.0, 0.0, *[float(s) for s in images.shape[2:]]]], device=images.device)
            logits = self.mask_head(out["fine"], out["coarse"], whole)
            zero = self.mask_loss(logits[:, 0], torch.zeros_like(logits[:, 0]), torch.zeros(1, device=images.device))
            return {"loss_mask": zero, **({"loss_mask_box": zero * 0.0} if box_terms else {})}
        boxes = self.mask_frames(torch.cat(roi_boxes))
        batch = torch.cat(roi_batch)
        ids = torch.cat(roi_ids)
        weights = torch.cat(roi_weights)
        rois = torch.cat([batch[:, None].to(boxes.dtype), boxes], dim=1)
        head_only = (weights == 0) if box_terms and not self.box_mask_loss.train_backbone else None
        logits = self._roi_mask_logits(out, rois, head_only)
        volumes = torch.stack([t["instances"].to(images.device) for t in targets])
        mask_targets = project_masks_on_boxes(volumes, ids, boxes, self.mask_head.mask_size, batch)
        losses = {"loss_mask": self.mask_loss(logits[:, 0], mask_targets, weights)}
        if box_terms:
            box_only = weights == 0
            losses["loss_mask_box"] = self.box_mask_loss(
                logits[box_only, 0], rois[box_only], torch.cat(roi_gt)[box_only], images
            )
        return losses

    def _roi_mask_logits(self, out: dict[str, Tensor], rois: Tensor, head_only: Tensor | None) -> Tensor:
        """``(K, 1, M, M, M)`` mask logits of ``rois (K, 7)``; the RoIs flagged in ``head_only (K,)`` see the
        backbone's features detached, so their loss trains the mask head and not the features detection shares."""
        if head_only is None or not head_only.any():
            return self.mask_head(out["fine"], out["coarse"], rois)
        shared, alone = torch.nonzero(~head_only).squeeze(1), torch.nonzero(head_only).squeeze(1)
        logits = self.mask_head(out["fine"].detach(), out["coarse"].detach(), rois[alone])
        if shared.numel():
            logits = torch.cat([self.mask_head(out["fine"], out["coarse"], rois[shared]), logits])
        return logits[torch.argsort(torch.cat([shared, alone]))]

    @property
    def box_terms_active(self) -> bool:
        """Whether box-only instances get the box terms (else the paper's rule: no mask loss for them)."""
        return self.box_mask_loss is not None and self.box_mask_loss.active

    def mask_frames(self, boxes: Tensor) -> Tensor:
        """``(K, 6)`` the frames the mask head predicts (and masks are pasted) in: ``boxes`` grown by
        ``mask_context`` of their size per side."""
        return expand_boxes(boxes, float(self.mask_context))

    # ------------------------------------------------------------------ the family contract (networks.family)
    def dense_network(self) -> nn.Module:
        return self.network

    def grid_multiple(self) -> tuple[int, int, int]:
        """The detection level's stride: the far face then lies on the anchor grid (``aligned_size``)."""
        return tuple(int(s) for s in self.coarse_stride)  # type: ignore[return-value]

    def block_halo(self) -> list[float]:
        """1.5 x the largest anchor shape: an object centred in a block's core is whole in the block."""
        return [1.5 * float(a) for a in self.anchor_shapes.max(dim=0).values.tolist()]

    def merge_nms_threshold(self) -> float:
        return float(self.nms_thresh)

    def typical_object_um(self) -> np.ndarray:
        """The middle anchor shape (by volume; k-means of the training boxes) in µm."""
        anchors = self.anchor_shapes.detach().cpu().numpy()
        middle = anchors[np.argsort(anchors.prod(axis=1))[len(anchors) // 2]]
        return middle * self.working_spacing.detach().cpu().numpy()

    def score_threshold(self) -> float:
        return float(self.score_thresh)

    def set_score_threshold(self, value: float) -> None:
        self.score_thresh.fill_(float(value))

    @contextmanager
    def lowered_score_threshold(self, floor: float) -> Iterator[None]:
        """Score threshold at ``floor`` and 4x the top-k candidates (a low floor lets more through to NMS)."""
        saved, saved_topk = self.score_thresh.clone(), self.selector.topk_candidates
        self.score_thresh.fill_(float(floor))
        self.selector.topk_candidates = saved_topk * 4
        try:
            yield
        finally:
            self.score_thresh.copy_(saved)
            self.selector.topk_candidates = saved_topk

    @torch.no_grad()
    def detect(self, out: dict[str, Tensor], spatial: Sequence[int]) -> list[dict[str, Tensor]]:
        """Second half of inference from the dense outputs (whole volume or one block): anchors, top-k, 3D NMS,
        RoIAlign mask head and paste-back, for each image of the batch (``instances`` of the contract)."""
        return self.instances(out, spatial)

    @torch.no_grad()
    def find_objects(self, out: dict[str, Tensor], spatial: Sequence[int]) -> list[dict[str, Tensor]]:
        """``boxes (K, 6)``, ``scores (K,)``, ``classes (K,)`` per image: threshold, top-k, 3D NMS."""
        return [
            {"boxes": boxes, "scores": scores, "classes": classes}
            for boxes, scores, classes in self.select_boxes(out, spatial)
        ]

    @torch.no_grad()
    def object_masks(
        self, out: dict[str, Tensor], index: int, found: dict[str, Tensor], keep: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The mask head's ``(k, M, M, M)`` probabilities in the frames ``mask_frames(boxes)`` of the kept boxes."""
        frames = self.mask_frames(found["boxes"][keep])
        fine, coarse = out["fine"][index : index + 1], out["coarse"][index : index + 1]
        return frames, self.mask_probabilities(fine, coarse, frames)

    @torch.no_grad()
    def select_boxes(self, out: dict[str, Tensor], spatial: Sequence[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
        """``(boxes (K, 6), scores (K,), class indices (K,))`` per image: threshold, top-k, 3D NMS."""
        anchors = self.anchors(spatial, out["cls_logits"])
        cls_logits = flatten_anchor_outputs(out["cls_logits"], self.num_classes + 1)
        box_deltas = flatten_anchor_outputs(out["box_regression"], 6)
        return [
            self.selector(
                cls_logits[i], box_deltas[i], anchors, self.box_coder, spatial, float(self.score_thresh),
                float(self.nms_thresh),
            )
            for i in range(cls_logits.shape[0])
        ]

    @torch.no_grad()
    def mask_probabilities(self, fine: Tensor, coarse: Tensor, frames: Tensor) -> Tensor:
        """``(K, M, M, M)`` mask probabilities in the ``(K, 6)`` frames ``mask_frames(boxes)`` of one image's
        boxes (``fine``/``coarse``: batch 1)."""
        rois = torch.cat([torch.zeros_like(frames[:, :1]), frames], dim=1)
        chunks = [self.mask_head(fine, coarse, part)[:, 0] for part in rois.split(MASK_ROI_CHUNK)]
        if not chunks:
            return torch.zeros((0, *(self.mask_head.mask_size,) * 3), device=frames.device)
        return torch.sigmoid(torch.cat(chunks).float())


register_family(
    ModelFamily("nuclei", WeakInstanceSegNet, "weakseg_monai.planning.TrainingPlanner", train_config="train.json")
)
