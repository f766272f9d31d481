"""weakseg-monai: 3D instance segmentation of cells and nuclei from weak annotation.

Boxes for every instance, voxel masks for a fraction of them (Zhao et al., MICCAI 2018), built from
MONAI components. Conventions used everywhere are in :mod:`weakseg_monai.conventions`.
"""

__version__ = "0.1.0"
