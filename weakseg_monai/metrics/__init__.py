"""Instance metrics: the paper's detection F1 (3D box IoU > 0.4), segmentation F1 (mask IoU), CTC SEG / DET,
the StarDist-style matching curve and marker-distance F1."""

from weakseg_monai.metrics.ctc import ctc_det, ctc_seg, marker_f1, matching_curve
from weakseg_monai.metrics.instance import (
    DetectionF1,
    SegmentationF1,
    detection_f1,
    instance_iou,
    match_one_to_one,
    segmentation_f1,
)

__all__ = [
    "ctc_det",
    "ctc_seg",
    "marker_f1",
    "matching_curve",
    "DetectionF1",
    "SegmentationF1",
    "detection_f1",
    "instance_iou",
    "match_one_to_one",
    "segmentation_f1",
]
