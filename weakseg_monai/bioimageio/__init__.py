"""bioimage.io export (``python -m weakseg_monai export-bioimageio``): the trained model as spec-0.5 model packages
that ilastik, deepImageJ, napari and ``bioimageio.core`` run. ``wrappers`` holds the two exported modules (torch
only), ``architecture`` the self-contained source file of the predictor variant, ``package`` the descriptions
(``bioimageio.spec``, the optional ``[bioimageio]`` extra)."""
