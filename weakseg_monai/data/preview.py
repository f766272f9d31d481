"""Max-intensity projections (xy and xz) of a stack with instance outlines, written as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402


def projection_outlines(instances: np.ndarray, axis: int) -> np.ndarray:
    """Outline image (bool) of every instance's projection along ``axis`` of an (x, y, z) label volume."""
    shape = [s for a, s in enumerate(instances.shape) if a != axis]
    outline = np.zeros(shape, dtype=bool)
    for k, sl in enumerate(ndimage.find_objects(instances), start=1):
        if sl is None:
            continue
        proj = (instances[sl] == k).any(axis=axis)
        region = tuple(s for a, s in enumerate(sl) if a != axis)
        outline[region] |= find_boundaries(np.pad(proj, 1), mode="inner")[1:-1, 1:-1]
    return outline


PREVIEW_WIDTH_IN = 6.0
PANEL_HEIGHT_IN = (0.8, 10.0)  # bounds of each panel's height: the PNG stays under ~700 x 2300 pixels


def save_preview(
    path: str | Path,
    image: np.ndarray,
    instances: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    title: str = "",
) -> Path:
    """Write xy and xz max-intensity projections of an (x, y, z) image, outlines in colour, physical aspect."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [1, 99.8])
    extent = [n * float(s) for n, s in zip(image.shape, spacing)]  # µm
    heights = [PREVIEW_WIDTH_IN * extent[1] / extent[0], PREVIEW_WIDTH_IN * extent[2] / extent[0]]
    panels = [min(max(h, PANEL_HEIGHT_IN[0]), PANEL_HEIGHT_IN[1]) for h in heights]
    physical = panels == heights  # extreme shapes (a 1-voxel-thin volume) get bounded panels, stretched
    fig, axes = plt.subplots(
        2, 1, figsize=(PREVIEW_WIDTH_IN, sum(panels) + 0.6), gridspec_kw={"height_ratios": panels}
    )
    for ax, axis, name, aspect in (
        (axes[0], 2, "xy (max over z)", spacing[1] / spacing[0] if physical else "auto"),
        (axes[1], 1, "xz (max over y)", spacing[2] / spacing[0] if physical else "auto"),
    ):
        mip = image.max(axis=axis).T  # rows = second remaining axis, columns = x
        ax.imshow(mip, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin="lower", interpolation="nearest")
        if instances is not None:
            outline = projection_outlines(np.asarray(instances), axis).T
            overlay = np.zeros((*outline.shape, 4), dtype=np.float32)
            overlay[outline] = (1.0, 0.85, 0.0, 0.9)
            ax.imshow(overlay, aspect=aspect, origin="lower", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x (voxels)", fontsize=8)
        ax.set_ylabel(name[:2][1] + " (voxels)", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
