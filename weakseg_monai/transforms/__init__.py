"""MONAI-style dictionary transforms for weak annotation (loading, working spacing, crop bookkeeping)."""

from weakseg_monai.transforms.dictionary import (
    BoundedRandCropBoxByPosNegLabeld,
    InstancesToSemanticd,
    LoadWeakAnnotationd,
    MarkCutBoxesd,
    RandFaceCutd,
    RandZoomBoxVolumed,
    ResampleToSpacingd,
    ShapeKeepingRandRotateBox90d,
    ToWorkingGridd,
    resample_volume,
    scale_percentiles,
)

__all__ = [
    "BoundedRandCropBoxByPosNegLabeld",
    "InstancesToSemanticd",
    "LoadWeakAnnotationd",
    "MarkCutBoxesd",
    "RandFaceCutd",
    "RandZoomBoxVolumed",
    "ResampleToSpacingd",
    "ShapeKeepingRandRotateBox90d",
    "ToWorkingGridd",
    "resample_volume",
    "scale_percentiles",
]
