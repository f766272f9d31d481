"""weakseg-monai: 3D instance segmentation of cells and nuclei from weak annotation.

Boxes for every instance, voxel masks for a fraction of them (Zhao et al., MICCAI 2018), built from
MONAI components. Conventions used everywhere are in :mod:`weakseg_monai.conventions`. A trained model of any
family: ``weakseg_monai.load_model("model.pt")``.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``weakseg_monai.load_model``: imported on first use, so ``import weakseg_monai`` stays light."""
    if name == "load_model":
        from weakseg_monai.families import load_model

        return load_model
    raise AttributeError(f"module 'weakseg_monai' has no attribute {name!r}")
