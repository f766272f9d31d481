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

from collections.abc import Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.data.box_utils import clip_boxes_to_image
from torch import Tensor, nn

from weakseg_monai.conventions import label_to_class_index
from weakseg_monai.families.registry import ModelFamily, register_family
from weakseg_monai.losses.box_loss import DetectionLoss
from weakseg_monai.networks.backbone import VoxResBackbone, check_divisible
from weakseg_monai.networks.family import FACE_MIRROR_FRACTION, InstanceModel, Region
from weakseg_monai.networks.heads import DetectionHead3D, MaskHead3D, flatten_anchor_outputs
from weakseg_monai.networks.mask_branch import MaskBranch
from weakseg_monai.networks.mask_rois import training_mask_rois
from weakseg_monai.networks.postprocess import BoxSelector
from weakseg_monai.utils.anchors import make_anchor_generator
from weakseg_monai.utils.matching import AnchorAssigner

DEFAULT_ANCHOR_SHAPES = ((12.0, 12.0, 6.0), (18.0, 18.0, 10.0), (24.0, 24.0, 12.0))
# in-plane-only stride in the stem (z is coarse at the working spacing), detection at stride (4, 4, 2)
DEFAULT_CHANNELS = (16, 32, 48)
DEFAULT_STRIDES = ((2, 2, 1), (2, 2, 2), (2, 2, 2))
DEFAULT_BLOCKS = (1, 2, 2)
# the stride of the detection level (backbone level 1): anchors sit at i * stride + stride // 2 of the input grid
DETECTION_STRIDE = tuple(int(np.prod([s[a] for s in DEFAULT_STRIDES[:2]])) for a in range(3))


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

    Composed as MONAI's ``RetinaNetDetector`` and torchvision's ``GeneralizedRCNN`` are, from injected parts, each
    with its own small constructor (defaults: the paper's settings):

    Args:
        network: the dense part (``VoxResDetectorNet``: backbone + detection head; its head is resized to the
            number of ``anchor_shapes``).
        anchor_shapes: anchor sizes (x, y, z) in voxels at the working spacing (see
            ``weakseg_monai.utils.anchors.anchor_shapes_from_boxes``); a buffer.
        assigner: the target assigner and sampler (``AnchorAssigner``: the paper's matching, ATSS for boxes no
            anchor shape fits, hard negatives).
        detection_loss: L_box (``DetectionLoss``: λ and the smooth-L1 transition).
        mask_branch: the mask head, its frames, both mask losses and the pasted probabilities (``MaskBranch``).
        selector: score threshold (calibrated on validation), NMS threshold (planned), top-k at inference
            (``BoxSelector``).
        working_spacing: (x, y, z) µm the model is trained and run at; intensity_percentiles: the per-image
            normalisation rule (lower, upper percentiles mapped to 0, 1). These, ``anchor_shapes`` and the
            selector's thresholds are buffers, so a checkpoint carries the whole plan inference needs (see
            ``weakseg_monai.planning``); a checkpoint written before the thresholds were buffers loads with the
            constructor's values for them.
    """

    family = "nuclei"
    # buffers added after the first checkpoints shipped: filled from the constructor when a state dict lacks them
    LATE_BUFFERS = ("selector.score_thresh", "selector.nms_thresh", "mask_branch.context")
    # state-dict entries of checkpoints written before the mask branch and the selector were parts: old -> new
    MOVED_ENTRIES = {
        "mask_head.": "mask_branch.head.",
        "mask_context": "mask_branch.context",
        "score_thresh": "selector.score_thresh",
        "nms_thresh": "selector.nms_thresh",
    }

    def __init__(
        self,
        network: VoxResDetectorNet | None = None,
        anchor_shapes: Sequence[Sequence[float]] = DEFAULT_ANCHOR_SHAPES,
        assigner: AnchorAssigner | None = None,
        detection_loss: DetectionLoss | None = None,
        mask_branch: MaskBranch | None = None,
        selector: BoxSelector | None = None,
        working_spacing: Sequence[float] = (0.5, 0.5, 1.0),
        intensity_percentiles: Sequence[float] = (1.0, 99.8),
    ) -> None:
        super().__init__()
        # what the model learned from the data travels with its weights (state dict buffers)
        self.register_buffer("anchor_shapes", torch.tensor([[float(v) for v in s] for s in anchor_shapes]))
        self.register_buffer("working_spacing", torch.tensor([float(v) for v in working_spacing]))
        self.register_buffer("intensity_percentiles", torch.tensor([float(v) for v in intensity_percentiles]))
        make_anchor_generator(self.anchor_shapes.tolist())  # validates the shapes
        if network is None:
            network = VoxResDetectorNet(num_anchors=len(anchor_shapes))
        elif network.head.num_anchors != len(anchor_shapes):
            network.set_num_anchors(len(anchor_shapes))
        self.network = network
        self.num_classes = network.num_classes
        self.mask_branch = mask_branch if mask_branch is not None else MaskBranch()
        self.mask_branch.bind(network)
        self.box_coder = BoxCoder(weights=(1.0,) * 6)
        self.assigner = assigner if assigner is not None else AnchorAssigner()
        self.detection_loss = detection_loss if detection_loss is not None else DetectionLoss()
        self.selector = selector if selector is not None else BoxSelector()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            for old, new in self.MOVED_ENTRIES.items():
                if key[len(prefix):].startswith(old):
                    state_dict[prefix + new + key[len(prefix) + len(old):]] = state_dict.pop(key)
        for name in self.LATE_BUFFERS:
            state_dict.setdefault(prefix + name, self.get_buffer(name).detach().clone())
        shapes = state_dict.get(prefix + "anchor_shapes")
        if isinstance(shapes, torch.Tensor) and shapes.ndim == 2 and shapes.shape != self.anchor_shapes.shape:
            # the plan chose another number of anchor shapes: resize before the head's weights load (the children
            # load after this module's own entries)
            self.anchor_shapes = torch.zeros_like(shapes, device=self.anchor_shapes.device)
            self.network.set_num_anchors(int(shapes.shape[0]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    # ------------------------------------------------------------------ names kept from before the mask branch
    @property
    def mask_head(self) -> MaskHead3D:
        return self.mask_branch.head

    @property
    def mask_context(self) -> Tensor:
        return self.mask_branch.context

    @property
    def mask_threshold(self) -> float:
        return self.mask_branch.threshold

    def mask_frames(self, boxes: Tensor) -> Tensor:
        return self.mask_branch.frames(boxes)

    @property
    def score_thresh(self) -> Tensor:
        return self.selector.score_thresh

    @property
    def nms_thresh(self) -> Tensor:
        return self.selector.nms_thresh

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
                proposals, gt_boxes, matched[pos], annotated, ignored.to(anchors.device),
                self.mask_branch.box_terms_active, self.mask_branch.rois_per_image,
            )
            if gt_index.numel():
                roi_boxes.append(boxes)
                roi_batch.append(torch.full((gt_index.numel(),), i, dtype=torch.long, device=anchors.device))
                roi_ids.append(instance_ids[gt_index])
                roi_weights.append(annotated[gt_index].float())
                roi_gt.append(gt_boxes[gt_index])

        loss_cls, loss_reg = self.detection_loss(
            cls_logits.reshape(-1, cls_logits.shape[-1]),
            box_deltas.reshape(-1, 6),
            torch.cat(all_classes),
            torch.cat(all_deltas),
            torch.cat(all_pos),
            torch.cat(all_neg),
        )
        losses = {"loss_cls": loss_cls, "loss_box_reg": loss_reg}
        losses.update(self.mask_branch.losses(out, images, targets, roi_boxes, roi_batch, roi_ids, roi_weights, roi_gt))
        return losses

    # ------------------------------------------------------------------ the family contract (networks.family)
    def dense_network(self) -> nn.Module:
        return self.network

    def grid_multiple(self) -> tuple[int, int, int]:
        """The detection level's stride: the far face then lies on the anchor grid (``aligned_size``)."""
        stride = self.network.backbone.cumulative_strides()[self.network.detection_level]
        return tuple(int(s) for s in stride)  # type: ignore[return-value]

    def block_halo(self) -> list[float]:
        """1.5 x the largest anchor shape: an object centred in a block's core is whole in the block."""
        return [1.5 * float(a) for a in self.anchor_shapes.max(dim=0).values.tolist()]

    def merge_nms_threshold(self) -> float:
        return float(self.nms_thresh)

    def face_margin(self) -> tuple[float, float, float]:
        """Working voxels mirrored beyond each face before prediction (``face_margin_for_anchors``)."""
        return face_margin_for_anchors(self.anchor_shapes.tolist())

    def typical_object_um(self) -> np.ndarray:
        """The middle anchor shape (by volume; k-means of the training boxes) in µm."""
        anchors = self.anchor_shapes.detach().cpu().numpy()
        middle = anchors[np.argsort(anchors.prod(axis=1))[len(anchors) // 2]]
        return middle * self.working_spacing.detach().cpu().numpy()

    def score_threshold(self) -> float:
        return float(self.score_thresh)

    def set_score_threshold(self, value: float) -> None:
        self.selector.set_score_threshold(value)

    def lowered_score_threshold(self, floor: float) -> AbstractContextManager[None]:
        return self.selector.lowered(floor)

    @torch.no_grad()
    def detect(self, out: dict[str, Tensor], spatial: Sequence[int]) -> list[dict[str, Tensor]]:
        """Second half of inference from the dense outputs (whole volume or one block): anchors, top-k, 3D NMS,
        RoIAlign mask head and paste-back, for each image of the batch (``instances`` of the contract)."""
        return self.instances(out, spatial)

    @torch.no_grad()
    def find_objects(
        self, out: dict[str, Tensor], spatial: Sequence[int], region: Region | None = None
    ) -> list[dict[str, Tensor]]:
        """``boxes (K, 6)``, ``scores (K,)``, ``classes (K,)`` per image: threshold, top-k, boxes centred in
        ``region``, 3D NMS."""
        return [
            {"boxes": boxes, "scores": scores, "classes": classes}
            for boxes, scores, classes in self.select_boxes(out, spatial, region)
        ]

    @torch.no_grad()
    def object_masks(
        self, out: dict[str, Tensor], index: int, found: dict[str, Tensor], keep: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The mask head's ``(k, M, M, M)`` probabilities in the frames ``mask_frames(boxes)`` of the kept boxes."""
        frames = self.mask_branch.frames(found["boxes"][keep])
        fine, coarse = out["fine"][index : index + 1], out["coarse"][index : index + 1]
        return frames, self.mask_branch.probabilities(fine, coarse, frames)

    @torch.no_grad()
    def select_boxes(
        self, out: dict[str, Tensor], spatial: Sequence[int], region: Region | None = None
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """``(boxes (K, 6), scores (K,), class indices (K,))`` per image: threshold, top-k, centre in ``region``,
        3D NMS."""
        anchors = self.anchors(spatial, out["cls_logits"])
        cls_logits = flatten_anchor_outputs(out["cls_logits"], self.num_classes + 1)
        box_deltas = flatten_anchor_outputs(out["box_regression"], 6)
        return [
            self.selector(cls_logits[i], box_deltas[i], anchors, self.box_coder, spatial, region)
            for i in range(cls_logits.shape[0])
        ]


def face_margin_for_anchors(anchor_shapes: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """``FACE_MIRROR_FRACTION`` of the largest anchor shape per axis (the whole nucleus: the other shapes include
    the thin ones of face-cut slivers), working voxels (x, y, z). A function of the anchors alone, so the planner
    can measure anchor coverage in the frame the matcher sees before any model exists."""
    largest = np.asarray(anchor_shapes, dtype=np.float64).reshape(-1, 3).max(axis=0)
    return tuple(FACE_MIRROR_FRACTION * float(v) for v in largest)  # type: ignore[return-value]


register_family(
    ModelFamily("nuclei", WeakInstanceSegNet, "weakseg_monai.planning.NucleiPlanner", train_config="train.json")
)
