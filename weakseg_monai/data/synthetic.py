"""Synthetic 3D fluorescence nuclei modelled on the Cell Tracking Challenge Fluo-N3DH-SIM+ HL60 stacks.

Sizes are physical (µm), so the same nuclei come out at any ``spacing``. Each stack has touching and
clustered nuclei (an exact partition: labels never overlap), a few cut by the stack border, occasional
dividing (daughter pairs) and small nuclei, chromatin-like texture, per-cell and depth-dependent
brightness, an uneven background, a PSF blur stronger in z, and Poisson + Gaussian camera noise, as
uint16. Everything is returned and stored in (x, y, z) order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from weakseg_monai.conventions import as_spacing
from weakseg_monai.data.datalist import partial_mask_from_instances, select_annotated, write_datalist
from weakseg_monai.data.instances import boxes_from_instances
from weakseg_monai.data.io import write_volume

logger = logging.getLogger(__name__)

DEFAULT_SHAPE = (128, 128, 32)
DEFAULT_SPACING = (0.5, 0.5, 1.0)
LARGE_SHAPE = (649, 639, 64)
LARGE_SPACING = (0.125, 0.125, 0.2)


@dataclass(frozen=True)
class NucleusModel:
    """Physical parameters of the nuclei and the microscope (µm and relative intensities)."""

    diameter_um: tuple[float, float] = (7.0, 11.0)
    n_cells: tuple[int, int] = (10, 40)
    touching_fraction: float = 0.6  # share of cells placed against an existing one
    small_fraction: float = 0.08
    dividing_fraction: float = 0.06
    dim_fraction: float = 0.15
    psf_sigma_um: tuple[float, float, float] = (0.3, 0.3, 0.8)
    photons: tuple[float, float] = (40.0, 150.0)  # expected photons at the brightest nucleus voxel
    read_noise: float = 3.0
    camera_offset: float = 100.0
    min_visible_fraction: float = 0.15  # border-cut pieces smaller than this share of the cell are dropped


@dataclass
class _Cell:
    centre: np.ndarray  # µm, (x, y, z)
    semi_axes: np.ndarray  # µm
    rotation: np.ndarray  # 3 x 3
    wobble_dirs: np.ndarray  # J x 3 unit vectors
    wobble_amp: np.ndarray  # J
    wobble_freq: np.ndarray  # J
    wobble_phase: np.ndarray  # J
    brightness: float


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _make_cell(rng: np.random.Generator, centre: np.ndarray, radius: float, model: NucleusModel) -> _Cell:
    dirs = rng.standard_normal((4, 3))
    dim = rng.random() < model.dim_fraction
    return _Cell(
        centre=np.asarray(centre, dtype=np.float64),
        semi_axes=radius * rng.uniform(0.85, 1.15, size=3),
        rotation=_random_rotation(rng),
        wobble_dirs=dirs / np.linalg.norm(dirs, axis=1, keepdims=True),
        wobble_amp=rng.uniform(0.02, 0.07, size=4),
        wobble_freq=rng.uniform(1.0, 3.0, size=4),
        wobble_phase=rng.uniform(0, 2 * np.pi, size=4),
        brightness=rng.uniform(0.15, 0.35) if dim else rng.uniform(0.5, 1.0),
    )


def _place_cells(rng: np.random.Generator, extent: np.ndarray, model: NucleusModel, n_target: int) -> list[_Cell]:
    """Sequential placement: clustered (touching a placed cell) or free, never deeply overlapping."""
    cells: list[_Cell] = []
    radii: list[float] = []
    centres: list[np.ndarray] = []
    lo_r, hi_r = (d / 2 for d in model.diameter_um)

    def fits(c: np.ndarray, r: float, tolerance: float = 0.82) -> bool:
        if not centres:
            return True
        d = np.linalg.norm(np.asarray(centres) - c, axis=1)
        return bool((d >= tolerance * (np.asarray(radii) + r)).all())

    def add(c: np.ndarray, r: float) -> None:
        cells.append(_make_cell(rng, c, r, model))
        radii.append(r)
        centres.append(c)

    attempts = 0
    while len(cells) < n_target and attempts < 60 * n_target:
        attempts += 1
        r = rng.uniform(lo_r, hi_r)
        if rng.random() < model.small_fraction:
            r *= 0.65
        if centres and rng.random() < model.touching_fraction:
            j = rng.integers(len(centres))
            v = rng.standard_normal(3)
            v[2] *= 0.5  # clusters spread more in-plane: stacks are thin in z
            c = centres[j] + (radii[j] + r) * rng.uniform(0.88, 1.02) * v / np.linalg.norm(v)
        else:
            margin = np.array([0.3 * r, 0.3 * r, 0.0])
            c = rng.uniform(-margin, extent + margin)
        c[2] = np.clip(c[2], min(0.45 * r, extent[2] / 2), max(extent[2] - 0.45 * r, extent[2] / 2))
        if not fits(c, r):
            continue
        if rng.random() < model.dividing_fraction and len(cells) + 2 <= n_target:
            axis = rng.standard_normal(3)
            axis[2] *= 0.3
            axis /= np.linalg.norm(axis)
            rs = 0.68 * r
            pair = [c - 0.95 * rs * axis, c + 0.95 * rs * axis]
            if all(fits(p, rs) for p in pair):
                for p in pair:
                    add(p, rs)
            continue
        add(c, r)
    return cells


def _render_labels(
    cells: list[_Cell], shape: tuple[int, int, int], spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partition the volume among cells by their normalised level (< 1 inside, lowest level wins).

    Returns labels (int32, value i+1 = cell i), level map (float32) and the ideal voxel count per cell.
    """
    labels = np.zeros(shape, dtype=np.int32)
    level = np.full(shape, np.inf, dtype=np.float32)
    ideal = np.zeros(len(cells))
    for i, cell in enumerate(cells):
        reach = 1.25 * cell.semi_axes.max()
        lo = np.maximum(np.floor((cell.centre - reach) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((cell.centre + reach) / spacing).astype(int) + 1, shape)
        ideal[i] = 4.0 / 3.0 * np.pi * np.prod(cell.semi_axes) / np.prod(spacing)
        if (hi <= lo).any():
            continue
        grids = np.meshgrid(*[(np.arange(a, b) + 0.5) * s for a, b, s in zip(lo, hi, spacing)], indexing="ij")
        p = np.stack(grids, axis=-1) - cell.centre
        u = (p @ cell.rotation) / cell.semi_axes
        rho = np.linalg.norm(u, axis=-1)
        direction = u / np.maximum(rho, 1e-6)[..., None]
        wobble = (
            np.cos(np.pi * cell.wobble_freq * (direction @ cell.wobble_dirs.T) + cell.wobble_phase) @ cell.wobble_amp
        )
        lev = (rho / (1.0 + wobble)).astype(np.float32)
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        sub_level = level[region]
        win = (lev < 1.0) & (lev < sub_level)
        sub_level[win] = lev[win]
        labels[region][win] = i + 1
    return labels, level, ideal


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigma_vox, mode="wrap")
    return field / max(float(field.std()), 1e-6)


def _coarse_field(rng: np.random.Generator, shape: tuple[int, int, int], cells: int = 4) -> np.ndarray:
    """Smooth low-frequency field in [0, 1] by trilinear upsampling of a tiny random grid."""
    small = rng.random((cells, cells, 2)).astype(np.float32)
    return ndimage.zoom(small, np.asarray(shape) / np.asarray(small.shape), order=1, mode="nearest", grid_mode=True)


def generate_stack(
    seed: int | list[int],
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    model: NucleusModel = NucleusModel(),
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic stack: ``(image uint16, instances int32)``, both (x, y, z).

    ``instances`` value k > 0 marks nucleus k (labels are consecutive, in box order).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing_arr = np.asarray(as_spacing(spacing))
    extent = np.asarray(shape) * spacing_arr
    cells = _place_cells(rng, extent, model, int(rng.integers(model.n_cells[0], model.n_cells[1] + 1)))
    labels, level, ideal = _render_labels(cells, shape, spacing_arr)

    counts = np.bincount(labels.ravel(), minlength=len(cells) + 1)[1:]
    keep = counts >= np.maximum(model.min_visible_fraction * ideal, 8)
    new_ids = np.zeros(len(cells) + 1, dtype=np.int32)
    new_ids[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    labels = new_ids[labels]
    cells = [c for c, k in zip(cells, keep) if k]

    # intensity: per-cell brightness x chromatin texture x soft edge x depth attenuation, plus background
    brightness = np.concatenate([[0.0], [c.brightness for c in cells]]).astype(np.float32)
    fine = _smooth_noise(rng, shape, 0.5 / spacing_arr)
    coarse = _smooth_noise(rng, shape, 1.5 / spacing_arr)
    chromatin = np.clip(1.0 + 0.22 * fine + 0.18 * coarse, 0.3, None)
    edge = np.sqrt(np.clip((1.0 - np.where(labels > 0, level, 1.0)) / 0.2, 0.0, 1.0))
    depth = (np.arange(shape[2]) + 0.5) * spacing_arr[2]
    attenuation = np.exp(-depth / rng.uniform(40.0, 120.0)).astype(np.float32)
    signal = brightness[labels] * chromatin * edge * attenuation[None, None, :]
    signal += 0.04 + 0.06 * _coarse_field(rng, shape)
    signal = ndimage.gaussian_filter(signal, sigma=np.asarray(model.psf_sigma_um) / spacing_arr, mode="nearest")

    photons = rng.uniform(*model.photons)
    counts_img = rng.poisson(np.clip(signal, 0, None) * photons).astype(np.float32)
    counts_img += model.camera_offset + model.read_noise * rng.standard_normal(shape, dtype=np.float32)
    image = np.clip(np.round(counts_img), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return image, labels


def write_synthetic_dataset(
    out: str | Path,
    n_train: int = 13,
    n_val: int = 4,
    n_test: int = 20,
    mask_fraction: float = 0.2,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    n_cells: tuple[int, int] = (10, 40),
    file_format: str = "nii.gz",
) -> Path:
    """Write a dataset folder in the weak-annotation format (see :mod:`weakseg_monai.data.datalist`).

    Every item has boxes for all nuclei, a partial ``mask`` with a seeded, nested ``mask_fraction`` of
    them, and the full ``gt_instances``. Returns the datalist path.
    """
    out = Path(out)
    if file_format not in ("nii.gz", "tif"):
        raise ValueError(f"file_format must be 'nii.gz' or 'tif', got {file_format!r}")
    model = NucleusModel(n_cells=tuple(n_cells))
    sections: dict[str, list[dict]] = {}
    for s_index, (section, count, prefix) in enumerate(
        [("training", n_train, "train"), ("validation", n_val, "val"), ("test", n_test, "test")]
    ):
        items = []
        for i in range(count):
            name = f"{prefix}_{i:03d}"
            image, instances = generate_stack([seed, s_index, i], shape, spacing, model)
            boxes = boxes_from_instances(instances)
            annotated = select_annotated(len(boxes), mask_fraction, seed, name)
            paths = {
                "image": f"images/{name}.{file_format}",
                "mask": f"masks/{name}_mask.{file_format}",
                "gt_instances": f"labels/{name}_gt.{file_format}",
            }
            write_volume(out / paths["image"], image, spacing)
            write_volume(
                out / paths["mask"], partial_mask_from_instances(instances, annotated).astype(np.uint16), spacing
            )
            write_volume(out / paths["gt_instances"], instances.astype(np.uint16), spacing)
            items.append(
                {
                    "id": name,
                    "image": paths["image"],
                    "box": boxes.tolist(),
                    "label": [0] * len(boxes),
                    "mask": paths["mask"],
                    "mask_annotated": annotated.tolist(),
                    "spacing": list(as_spacing(spacing)),
                    "gt_instances": paths["gt_instances"],
                }
            )
            logger.info("%s: %d nuclei, %d with masks", name, len(boxes), int(annotated.sum()))
        sections[section] = items
    return write_datalist(out, sections)


def ensure_synthetic_dataset(out: str | Path, **kwargs) -> Path:
    """The embedded default: write the synthetic dataset to ``out`` unless its datalist already exists."""
    path = Path(out) / "datalist.json"
    if path.is_file():
        logger.info("using the existing dataset at %s", path)
        return path
    logger.info("no dataset at %s: generating the synthetic HL60-like default", out)
    return write_synthetic_dataset(out, **kwargs)
