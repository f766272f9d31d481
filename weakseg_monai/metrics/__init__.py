"""Instance metrics: the paper's detection F1 (3D box IoU > 0.4) and segmentation F1 (mask IoU)."""

from weakseg_monai.metrics.instance import (
    DetectionF1,
    SegmentationF1,
    detection_f1,
    instance_iou,
    match_one_to_one,
    segmentation_f1,
)

__all__ = ["DetectionF1", "SegmentationF1", "detection_f1", "instance_iou", "match_one_to_one", "segmentation_f1"]
