"""MONAI-style dictionary transforms for weak annotation (loading, working spacing, crop bookkeeping)."""

from weakseg_monai.transforms.dictionary import (
    BoundedRandCropBoxByPosNegLabeld,
    InstancesToSemanticd,
    LoadWeakAnnotationd,
    MarkCutBoxesd,
    MirrorFacesd,
    RandFaceCutd,
    RandZoomBoxVolumed,
    ResampleToSpacingd,
    ShapeKeepingRandRotateBox90d,
    WeakWallTargetsd,
    resample_volume,
    scale_percentiles,
)
from weakseg_monai.transforms.input_rule import InputRule, InputRuled, ToWorkingGridd

__all__ = [
    "InputRule",
    "InputRuled",
    "BoundedRandCropBoxByPosNegLabeld",
    "InstancesToSemanticd",
    "WeakWallTargetsd",
    "LoadWeakAnnotationd",
    "MarkCutBoxesd",
    "MirrorFacesd",
    "RandFaceCutd",
    "RandZoomBoxVolumed",
    "ResampleToSpacingd",
    "ShapeKeepingRandRotateBox90d",
    "ToWorkingGridd",
    "resample_volume",
    "scale_percentiles",
]
