"""Random small or odd geometries that the default training command must handle: the CI geometry test and
``scripts/geometry_sweep.py`` draw datasets here.

Each case is one microscope (in-plane voxel size, anisotropy up to 8), 1-3 training volumes of their own sizes
(non-square in-plane, sometimes only a few slices deep), nuclei of a drawn diameter in in-plane voxels and a drawn
share of voxel masks (0 to 100%). The volumes are ``generate_crop`` crops, so objects are cut by every face.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from weakseg_monai.data.datalist import write_datalist
from weakseg_monai.data.synthetic import NucleusModel, generate_crop, write_item

MAX_ANISOTROPY = 8.0
FILL = 0.2  # share of a volume the nuclei are drawn to fill


@dataclass(frozen=True)
class GeometryCase:
    """One drawn dataset: ``spacing`` (x, y, z) µm, ``shapes`` (x, y, z) voxels per training volume, the nuclei's
    in-plane diameter in voxels, the mask share and the seed of the stacks."""

    name: str
    spacing: tuple[float, float, float]
    shapes: tuple[tuple[int, int, int], ...]
    object_vox: float
    mask_fraction: float
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def draw_case(
    seed: int, axis_vox: tuple[int, int] = (8, 64), object_vox: tuple[float, float] = (3, 20)
) -> GeometryCase:
    """A random case: every axis in ``axis_vox`` voxels (z only a few slices deep in about a third of the cases),
    nuclei of ``object_vox`` in-plane voxels, anisotropy 1-8, 1-3 volumes, 0-100% masks."""
    rng = np.random.default_rng([0x6E0, seed])
    xy = round(float(rng.uniform(0.2, 1.0)), 3)
    anisotropy = float(np.exp(rng.uniform(0.0, np.log(MAX_ANISOTROPY))))
    shallow = rng.random() < 0.35
    shapes = []
    for _ in range(int(rng.integers(1, 4))):
        x, y = (int(rng.integers(axis_vox[0], axis_vox[1] + 1)) for _ in range(2))
        z_hi = min(axis_vox[0] + 4, axis_vox[1]) if shallow else axis_vox[1]
        shapes.append((x, y, int(rng.integers(axis_vox[0], z_hi + 1))))
    mask_fraction = float(rng.choice([0.0, 0.2, 1.0, round(float(rng.uniform()), 2)]))
    return GeometryCase(
        name=f"case{seed:03d}",
        spacing=(xy, xy, round(xy * anisotropy, 3)),
        shapes=tuple(shapes),
        object_vox=round(float(rng.uniform(*object_vox)), 1),
        mask_fraction=mask_fraction,
        seed=seed,
    )


# the real crop that crashed training (one volume of 28 x 61 x 31 voxels at 1 x 1 x 2 µm, 30 nuclei, 6 with masks)
REPORTED_CASE = GeometryCase("reported-28x61x31", (1.0, 1.0, 2.0), ((28, 61, 31),), 8.0, 0.2, 7)


def nucleus_model(case: GeometryCase, shape: tuple[int, int, int]) -> NucleusModel:
    """Nuclei of the case's size; as many as fill ``FILL`` of the stack ``generate_crop`` cuts the volume from."""
    spacing = np.asarray(case.spacing)
    diameter_um = case.object_vox * case.spacing[0]
    margin = np.ceil(1.2 * diameter_um / spacing) * 2
    stack_um3 = float(np.prod((np.asarray(shape) + margin) * spacing))
    n = int(np.clip(round(FILL * stack_um3 / (np.pi / 6 * diameter_um**3)), 1, 400))
    return NucleusModel(
        diameter_um=(0.8 * diameter_um, 1.2 * diameter_um),
        n_cells=(n, n),
        touching_fraction=0.3,
        psf_sigma_um=(0.1 * diameter_um, 0.1 * diameter_um, 0.25 * diameter_um),
        texture_um=(0.07 * diameter_um, 0.2 * diameter_um),
        min_visible_fraction=0.0,
        min_voxels=2,
    )


def write_case(case: GeometryCase, out: str | Path, tries: int = 8) -> Path:
    """Write ``case`` as a dataset (training volumes only; validation falls back to them) to ``out``. A draw with
    no object at all is redrawn with the next stack seeds (up to ``tries`` times): such a dataset is refused."""
    out = Path(out)
    for attempt in range(tries):
        items = []
        for i, shape in enumerate(case.shapes):
            image, instances = generate_crop(
                [case.seed, attempt, i], shape, case.spacing, nucleus_model(case, shape), min_extent_vox=(1, 1, 1)
            )
            items.append(write_item(out, f"train_{i:03d}", image, instances, case.spacing, case.mask_fraction, 0))
        if any(item["box"] for item in items):
            return write_datalist(out, {"training": items, "validation": [], "test": []})
    raise RuntimeError(f"{case.name}: no object in {tries} draws")
