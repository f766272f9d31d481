"""Networks: VoxRes backbone, detection and mask heads, and the whole weak-annotation model."""

from weakseg_monai.networks.backbone import VoxResBackbone, VoxResBlock
from weakseg_monai.networks.baseline import VoxResSegNet
from weakseg_monai.networks.detector import VoxResDetectorNet, WeakInstanceSegNet
from weakseg_monai.networks.export import WeakInstanceSegNetExport
from weakseg_monai.networks.heads import DetectionHead3D, MaskHead3D
from weakseg_monai.networks.mask_branch import MaskBranch
from weakseg_monai.networks.postprocess import BoxSelector
from weakseg_monai.networks.wallmap import WallMapNet

__all__ = [
    "BoxSelector",
    "DetectionHead3D",
    "MaskBranch",
    "MaskHead3D",
    "VoxResBackbone",
    "VoxResBlock",
    "VoxResDetectorNet",
    "VoxResSegNet",
    "WallMapNet",
    "WeakInstanceSegNet",
    "WeakInstanceSegNetExport",
]
