"""Synthetic 3D fluorescence nuclei modelled on the Cell Tracking Challenge Fluo-N3DH-SIM+ HL60 stacks.

Sizes are physical (µm), so the same nuclei come out at any ``spacing``. Each stack has touching and
clustered nuclei (an exact partition: labels never overlap), a few cut by the stack border, occasional
dividing (daughter pairs) and small nuclei, chromatin-like texture, per-cell and depth-dependent
brightness, an uneven background, a PSF blur stronger in z, and Poisson + Gaussian camera noise, as
uint16. Everything is returned and stored in (x, y, z) order.

``NucleusModel``'s extra knobs (a target volume fraction, overlap, a peak SNR, uint8 output, a membrane
stain rendered as a power tessellation with bright walls) drive the generalisation suite ``SUITE``
(``write_suite_dataset``); their defaults leave the HL60-like stacks bit-identical.
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
    overlap_tolerance: float = 0.82  # centres stay >= this x (r1 + r2) apart; lower lets nuclei overlap
    contact_range: tuple[float, float] = (0.88, 1.02)  # touching cells: centre distance / (r1 + r2)
    volume_fraction: float | None = None  # stop placing once about this share of the volume is covered
    min_extent_vox: tuple[int, int, int] | None = None  # drop objects whose box is thinner (x, y, z voxels)
    texture_um: tuple[float, float] = (0.5, 1.5)  # fine and coarse chromatin / wall texture scales
    peak_snr: float | None = None  # (mean signal - background) / noise std; raises the read noise to reach it
    dtype: str = "uint16"  # stored image dtype: "uint16" (camera counts) or "uint8" (percentile-rescaled)
    stain: str = "nucleus"  # "nucleus" (filled nuclei) or "membrane" (cell walls of a packed tissue)
    wall_um: float = 0.3  # membrane stain: wall thickness (FWHM before the PSF)
    min_voxels: int = 8  # objects (or their visible pieces) with fewer voxels are dropped


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

    coverage = _Coverage(extent, lo_r / 3.0) if model.volume_fraction is not None else None

    def fits(c: np.ndarray, r: float) -> bool:
        if not centres:
            return True
        d = np.linalg.norm(np.asarray(centres) - c, axis=1)
        return bool((d >= model.overlap_tolerance * (np.asarray(radii) + r)).all())

    def add(c: np.ndarray, r: float) -> None:
        cells.append(_make_cell(rng, c, r, model))
        radii.append(r)
        centres.append(c)
        if coverage is not None:
            coverage.add(c, r)

    def full() -> bool:
        return coverage is not None and coverage.fraction() >= model.volume_fraction

    attempts = 0
    while len(cells) < n_target and attempts < 60 * n_target and not full():
        attempts += 1
        r = rng.uniform(lo_r, hi_r)
        if rng.random() < model.small_fraction:
            r *= 0.65
        if centres and rng.random() < model.touching_fraction:
            j = rng.integers(len(centres))
            v = rng.standard_normal(3)
            v[2] *= 0.5  # clusters spread more in-plane: stacks are thin in z
            c = centres[j] + (radii[j] + r) * rng.uniform(*model.contact_range) * v / np.linalg.norm(v)
        else:
            margin = np.array([0.3 * r, 0.3 * r, 0.0])
            c = rng.uniform(-margin, extent + margin)
        c[2] = np.clip(c[2], min(0.45 * r, extent[2] / 2), max(extent[2] - 0.45 * r, extent[2] / 2))
        if coverage is not None and ((c < -0.3 * r) | (c > extent + 0.3 * r)).any():
            continue  # packing to a volume fraction: clusters must not grow out of the stack
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


class _Coverage:
    """Share of the volume inside placed spheres, on a coarse grid (for ``NucleusModel.volume_fraction``)."""

    def __init__(self, extent: np.ndarray, step: float) -> None:
        self.step = step
        self.occupied = np.zeros(np.maximum(np.ceil(extent / step).astype(int), 1), dtype=bool)

    def add(self, centre: np.ndarray, radius: float) -> None:
        lo = np.maximum(np.floor((centre - radius) / self.step).astype(int), 0)
        hi = np.minimum(np.ceil((centre + radius) / self.step).astype(int) + 1, self.occupied.shape)
        if (hi <= lo).any():
            return
        grids = np.meshgrid(*[(np.arange(a, b) + 0.5) * self.step for a, b in zip(lo, hi)], indexing="ij")
        inside = sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2
        self.occupied[tuple(slice(a, b) for a, b in zip(lo, hi))] |= inside

    def fraction(self) -> float:
        return float(self.occupied.mean())


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


def _keep_visible(labels: np.ndarray, ideal: np.ndarray, model: NucleusModel) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``len(ideal)`` objects to keep: enough of the object in view, and a box no thinner than allowed.

    Returns the keep flags and the old-id -> new consecutive-id table (0 stays 0).
    """
    counts = np.bincount(labels.ravel(), minlength=len(ideal) + 1)[1:]
    keep = counts >= np.maximum(model.min_visible_fraction * ideal, model.min_voxels)
    if model.min_extent_vox is not None:
        extents = np.zeros((len(ideal), 3), dtype=int)
        for k, sl in enumerate(ndimage.find_objects(labels, max_label=len(ideal))):
            if sl is not None:
                extents[k] = [s.stop - s.start for s in sl]
        keep &= (extents >= np.asarray(model.min_extent_vox)).all(axis=1)
    new_ids = np.zeros(len(ideal) + 1, dtype=np.int32)
    new_ids[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return keep, new_ids


def _camera(rng: np.random.Generator, signal: np.ndarray, foreground: np.ndarray, model: NucleusModel) -> np.ndarray:
    """Photon counts (Poisson) + offset + Gaussian read noise, stored as ``model.dtype``.

    With ``model.peak_snr`` the read noise is raised so that (mean foreground - mean background) / background
    noise std is about ``peak_snr`` before quantisation. ``uint8`` maps the 0.01-99.99 percentiles to 2-252.
    """
    shape = signal.shape
    photons = rng.uniform(*model.photons)
    expected = np.clip(signal, 0, None) * photons
    read_noise = model.read_noise
    if model.peak_snr is not None and foreground.any() and not foreground.all():
        background = float(expected[~foreground].mean())
        sigma = (float(expected[foreground].mean()) - background) / model.peak_snr
        read_noise = float(np.sqrt(max(sigma**2 - background, model.read_noise**2)))
    counts_img = rng.poisson(expected).astype(np.float32)
    counts_img += model.camera_offset + read_noise * rng.standard_normal(shape, dtype=np.float32)
    if model.dtype == "uint8":
        lo, hi = np.percentile(counts_img, [0.01, 99.99])
        scaled = 2.0 + 250.0 * (counts_img - lo) / max(float(hi - lo), 1e-6)
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    if model.dtype != "uint16":
        raise ValueError(f"NucleusModel.dtype must be 'uint16' or 'uint8', got {model.dtype!r}")
    return np.clip(np.round(counts_img), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _background(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    return 0.04 + 0.06 * _coarse_field(rng, shape)


def _seed_cells(rng: np.random.Generator, extent: np.ndarray, model: NucleusModel) -> tuple[np.ndarray, np.ndarray]:
    """Tissue cell centres (µm) and radii: dart throwing over the volume plus a margin, until it jams.

    Centres stay ``overlap_tolerance`` x (r1 + r2) apart; at most ``n_cells[1]`` seeds.
    """
    lo_r, hi_r = (d / 2 for d in model.diameter_um)
    centres: list[np.ndarray] = []
    radii: list[float] = []
    failures = 0
    while failures < 400 and len(centres) < model.n_cells[1]:
        r = rng.uniform(lo_r, hi_r)
        c = rng.uniform(-hi_r, extent + hi_r)
        if centres:
            d = np.linalg.norm(np.asarray(centres) - c, axis=1)
            if (d < model.overlap_tolerance * (np.asarray(radii) + r)).any():
                failures += 1
                continue
        centres.append(c)
        radii.append(r)
        failures = 0
    return np.asarray(centres), np.asarray(radii)


def _power_cells(
    points: list[np.ndarray], centres: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power tessellation: nearest seed by ``|p - c|^2 - r^2`` per voxel, and the distance to the wall.

    ``points`` are the x, y, z coordinate grids (µm). Returns the nearest and second-nearest seed index
    and the distance (µm) to the bisecting plane of those two seeds.
    """
    shape = points[0].shape
    best = np.full(shape, np.inf, dtype=np.float32)
    second = np.full(shape, np.inf, dtype=np.float32)
    best_i = np.zeros(shape, dtype=np.int32)
    second_i = np.zeros(shape, dtype=np.int32)
    for i, (c, r) in enumerate(zip(centres, radii)):
        d = sum((p - np.float32(ci)) ** 2 for p, ci in zip(points, c)) - np.float32(r**2)
        closer = d < best
        runner_up = (d < second) & ~closer
        np.copyto(second, d, where=runner_up)
        np.copyto(second_i, i, where=runner_up)
        np.copyto(second, best, where=closer)
        np.copyto(second_i, best_i, where=closer)
        np.copyto(best, d, where=closer)
        np.copyto(best_i, i, where=closer)
    separation = np.linalg.norm(centres[best_i] - centres[second_i], axis=-1).astype(np.float32)
    wall_distance = (second - best) / np.maximum(2.0 * separation, 1e-3)
    return best_i, second_i, wall_distance


def _generate_membrane(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray, model: NucleusModel
) -> tuple[np.ndarray, np.ndarray]:
    """Densely packed tissue stained at the cell walls: every voxel belongs to a cell.

    Cells are a power tessellation of seeds in a smoothly warped space (irregular walls); objects thinner
    than ``min_extent_vox`` (or with < 8 voxels) are given to their neighbours. The image is the walls
    (Gaussian profile of ``wall_um``, textured, per-cell brightness) on dim interiors, PSF, camera noise.
    """
    extent = np.asarray(shape) * spacing
    centres, radii = _seed_cells(rng, extent, model)
    warp_sigma = model.texture_um[1] / spacing
    points = [
        ((np.arange(n, dtype=np.float32) + 0.5) * s).reshape([-1 if a == axis else 1 for a in range(3)])
        + 0.12 * model.diameter_um[0] * _smooth_noise(rng, shape, warp_sigma)
        for axis, (n, s) in enumerate(zip(shape, spacing))
    ]
    first, _, _ = _power_cells(points, centres, radii)
    keep, _ = _keep_visible(first + 1, np.zeros(len(centres)), model)
    centres, radii = centres[keep], radii[keep]
    nearest, other, wall_distance = _power_cells(points, centres, radii)
    labels = (nearest + 1).astype(np.int32)

    brightness = rng.uniform(0.6, 1.0, size=len(centres)).astype(np.float32)
    texture = np.clip(1.0 + 0.3 * _smooth_noise(rng, shape, model.texture_um[0] / spacing), 0.2, None)
    sigma_wall = model.wall_um / 2.355
    walls = np.exp(-0.5 * (wall_distance / sigma_wall) ** 2) * 0.5 * (brightness[nearest] + brightness[other])
    signal = walls * texture + 0.05 * brightness[nearest]
    depth = (np.arange(shape[2]) + 0.5) * spacing[2]
    signal *= np.exp(-depth / rng.uniform(40.0, 120.0)).astype(np.float32)[None, None, :]
    signal += _background(rng, shape)
    signal = ndimage.gaussian_filter(signal, sigma=np.asarray(model.psf_sigma_um) / spacing, mode="nearest")
    return _camera(rng, signal, wall_distance < model.wall_um / 2, model), labels


def generate_stack(
    seed: int | list[int],
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    model: NucleusModel = NucleusModel(),
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic stack: ``(image, instances int32)``, both (x, y, z); image uint16 (or ``model.dtype``).

    ``instances`` value k > 0 marks object k (labels are consecutive, in box order).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing_arr = np.asarray(as_spacing(spacing))
    if model.stain == "membrane":
        return _generate_membrane(rng, shape, spacing_arr, model)
    if model.stain != "nucleus":
        raise ValueError(f"NucleusModel.stain must be 'nucleus' or 'membrane', got {model.stain!r}")
    extent = np.asarray(shape) * spacing_arr
    cells = _place_cells(rng, extent, model, int(rng.integers(model.n_cells[0], model.n_cells[1] + 1)))
    labels, level, ideal = _render_labels(cells, shape, spacing_arr)
    keep, new_ids = _keep_visible(labels, ideal, model)
    labels = new_ids[labels]
    cells = [c for c, k in zip(cells, keep) if k]

    # intensity: per-cell brightness x chromatin texture x soft edge x depth attenuation, plus background
    brightness = np.concatenate([[0.0], [c.brightness for c in cells]]).astype(np.float32)
    fine = _smooth_noise(rng, shape, model.texture_um[0] / spacing_arr)
    coarse = _smooth_noise(rng, shape, model.texture_um[1] / spacing_arr)
    chromatin = np.clip(1.0 + 0.22 * fine + 0.18 * coarse, 0.3, None)
    edge = np.sqrt(np.clip((1.0 - np.where(labels > 0, level, 1.0)) / 0.2, 0.0, 1.0))
    depth = (np.arange(shape[2]) + 0.5) * spacing_arr[2]
    attenuation = np.exp(-depth / rng.uniform(40.0, 120.0)).astype(np.float32)
    signal = brightness[labels] * chromatin * edge * attenuation[None, None, :]
    signal += _background(rng, shape)
    signal = ndimage.gaussian_filter(signal, sigma=np.asarray(model.psf_sigma_um) / spacing_arr, mode="nearest")
    return _camera(rng, signal, labels > 0, model), labels


def write_tiled_stack(
    image_store,
    labels_store,
    seed: int,
    tile: tuple[int, int, int] = (256, 256, 128),
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    model: NucleusModel = NucleusModel(n_cells=(160, 640), photons=(90.0, 90.0)),
) -> np.ndarray:
    """Fill an HL60-like stack of any size tile by tile, never whole in memory: ``image_store`` and
    ``labels_store`` are writable ``(Z, Y, X)`` arrays (zarr, numpy memmap) of one shape, a whole number of
    ``tile`` (x, y, z) voxels. Returns the ground-truth boxes ``(N, 6)`` (x, y, z voxels, half-open); object k has
    label k + 1.

    Each tile places its own nuclei (``model.n_cells`` per tile) and is rendered with a margin from its own and its
    neighbours' nuclei, so nuclei cross tile borders whole, with one label (a nucleus its neighbours hide entirely
    keeps its unused id). Photons per voxel and the depth
    attenuation are the same for the whole stack (``model.photons`` should be a single value), so the tiles differ
    only in their noise. Why not ``generate_stack`` per tile: its nuclei would be cut at every tile border and its
    brightness would jump from tile to tile.
    """
    rng = np.random.default_rng(seed)
    spacing_arr = np.asarray(as_spacing(spacing))
    shape_xyz = np.asarray(labels_store.shape[::-1])
    tile_arr = np.asarray(tile)
    grid = shape_xyz // tile_arr
    if (grid * tile_arr != shape_xyz).any() or (grid < 1).any():
        raise ValueError(f"stack shape {tuple(shape_xyz)} (x, y, z) is not a whole number of tiles {tuple(tile)}")
    extent = tile_arr * spacing_arr
    cells: list[_Cell] = []
    for index in np.ndindex(*grid):  # placement first: a tile's rendering needs its neighbours' nuclei
        placed = _place_cells(rng, extent, model, int(rng.integers(model.n_cells[0], model.n_cells[1] + 1)))
        for cell in placed:
            cell.centre = cell.centre + np.asarray(index) * extent
        cells.extend(placed)
    centres = np.asarray([c.centre for c in cells])
    reach = max(model.diameter_um) * 0.75 + 3 * max(model.psf_sigma_um)
    pad = np.ceil(reach / spacing_arr).astype(int)
    # the default stacks' dimming from top to bottom (``generate_stack``), over this stack's depth
    depth_ratio = float(shape_xyz[2] * spacing_arr[2]) / (DEFAULT_SHAPE[2] * DEFAULT_SPACING[2])
    attenuation_um = rng.uniform(40.0, 120.0) * max(1.0, depth_ratio)
    boxes = np.zeros((len(cells), 6), dtype=np.int64)
    boxes[:, :3] = np.iinfo(np.int64).max
    for index in np.ndindex(*grid):
        lo = np.asarray(index) * tile_arr
        start, stop = np.maximum(lo - pad, 0), np.minimum(lo + tile_arr + pad, shape_xyz)
        near = np.nonzero(np.all((centres > (start * spacing_arr - reach)) & (centres < stop * spacing_arr + reach),
                                 axis=1))[0]
        local = [_Cell(**{**c.__dict__, "centre": c.centre - start * spacing_arr}) for c in (cells[i] for i in near)]
        shape = tuple(int(v) for v in stop - start)
        labels, level, _ = _render_labels(local, shape, spacing_arr)
        brightness = np.concatenate([[0.0], [c.brightness for c in local]]).astype(np.float32)
        fine = _smooth_noise(rng, shape, model.texture_um[0] / spacing_arr)
        coarse = _smooth_noise(rng, shape, model.texture_um[1] / spacing_arr)
        chromatin = np.clip(1.0 + 0.22 * fine + 0.18 * coarse, 0.3, None)
        edge = np.sqrt(np.clip((1.0 - np.where(labels > 0, level, 1.0)) / 0.2, 0.0, 1.0))
        depth = (np.arange(start[2], stop[2]) + 0.5) * spacing_arr[2]
        signal = brightness[labels] * chromatin * edge * np.exp(-depth / attenuation_um).astype(np.float32)
        signal += 0.07  # a flat background: a per-tile field would step at the tile borders
        signal = ndimage.gaussian_filter(signal, sigma=np.asarray(model.psf_sigma_um) / spacing_arr, mode="nearest")
        image = _camera(rng, signal, labels > 0, model)
        core = tuple(slice(int(a), int(a + t)) for a, t in zip(lo - start, tile_arr))
        global_ids = np.concatenate([[0], near + 1]).astype(np.int32)
        labels = global_ids[labels[core]]
        region = tuple(slice(int(a), int(a + t)) for a, t in zip(lo, tile_arr))[::-1]
        image_store[region] = np.ascontiguousarray(image[core].transpose(2, 1, 0))
        labels_store[region] = np.ascontiguousarray(labels.transpose(2, 1, 0))
        for k, found in enumerate(ndimage.find_objects(labels), start=1):
            if found is not None:
                box = [s.start + int(o) for s, o in zip(found, lo)] + [s.stop + int(o) for s, o in zip(found, lo)]
                boxes[k - 1, :3] = np.minimum(boxes[k - 1, :3], box[:3])
                boxes[k - 1, 3:] = np.maximum(boxes[k - 1, 3:], box[3:])
    return boxes[boxes[:, 3] > 0]  # a nucleus its neighbours hid entirely has no voxel and no box


def generate_crop(
    seed: int | list[int],
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    model: NucleusModel,
    min_extent_vox: tuple[int, int, int] = (3, 3, 3),
) -> tuple[np.ndarray, np.ndarray]:
    """A crop of a larger stack, as users annotate them: ``shape`` voxels cut out of the middle of a stack one
    largest nucleus wider on every side, so nuclei are cut by all six faces anywhere along them (a whole stack's
    z-placement rule keeps nuclei away from its own top and bottom). Objects thinner than ``min_extent_vox`` in
    some axis are dropped (a sliver nobody can annotate); labels are renumbered consecutively in box order."""
    spacing_arr = np.asarray(as_spacing(spacing))
    margin = np.ceil(max(model.diameter_um) / spacing_arr).astype(int)
    image, labels = generate_stack(seed, tuple(np.asarray(shape) + 2 * margin), spacing, model)
    window = tuple(slice(int(m), int(m) + int(n)) for m, n in zip(margin, shape))
    image, labels = image[window], labels[window]
    keep = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is not None and all(s.stop - s.start >= e for s, e in zip(sl, min_extent_vox)):
            keep[k] = True
    counts = np.bincount(labels.ravel(), minlength=len(keep))
    keep &= counts >= model.min_voxels
    new_ids = np.zeros(len(keep), dtype=np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
    return np.ascontiguousarray(image), new_ids[labels]


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
    model: NucleusModel | None = None,
) -> Path:
    """Write a dataset folder in the weak-annotation format (see :mod:`weakseg_monai.data.datalist`).

    Every item has boxes for all nuclei, a partial ``mask`` with a seeded, nested ``mask_fraction`` of
    them, and the full ``gt_instances``. ``model`` (default: HL60-like with ``n_cells``) replaces ``n_cells``.
    Returns the datalist path.
    """
    out = Path(out)
    if file_format not in ("nii.gz", "tif"):
        raise ValueError(f"file_format must be 'nii.gz' or 'tif', got {file_format!r}")
    model = model if model is not None else NucleusModel(n_cells=tuple(n_cells))
    sections: dict[str, list[dict]] = {}
    for s_index, (section, count, prefix) in enumerate(
        [("training", n_train, "train"), ("validation", n_val, "val"), ("test", n_test, "test")]
    ):
        items = []
        for i in range(count):
            name = f"{prefix}_{i:03d}"
            image, instances = generate_stack([seed, s_index, i], shape, spacing, model)
            items.append(write_item(out, name, image, instances, spacing, mask_fraction, seed, file_format))
        sections[section] = items
    return write_datalist(out, sections)


def write_item(
    out: Path,
    name: str,
    image: np.ndarray,
    instances: np.ndarray,
    spacing: tuple[float, float, float],
    mask_fraction: float,
    seed: int,
    file_format: str = "nii.gz",
) -> dict:
    """Write one stack (image, partial mask with a seeded, nested ``mask_fraction``, full ``gt_instances``) under
    ``out`` and return its datalist item."""
    boxes = boxes_from_instances(instances)
    annotated = select_annotated(len(boxes), mask_fraction, seed, name)
    paths = {
        "image": f"images/{name}.{file_format}",
        "mask": f"masks/{name}_mask.{file_format}",
        "gt_instances": f"labels/{name}_gt.{file_format}",
    }
    write_volume(out / paths["image"], image, spacing)
    write_volume(out / paths["mask"], partial_mask_from_instances(instances, annotated).astype(np.uint16), spacing)
    write_volume(out / paths["gt_instances"], instances.astype(np.uint16), spacing)
    logger.info("%s: %d nuclei, %d with masks", name, len(boxes), int(annotated.sum()))
    return {
        "id": name,
        "image": paths["image"],
        "box": boxes.tolist(),
        "label": [0] * len(boxes),
        "mask": paths["mask"],
        "mask_annotated": annotated.tolist(),
        "spacing": list(as_spacing(spacing)),
        "gt_instances": paths["gt_instances"],
    }


def ensure_synthetic_dataset(out: str | Path, **kwargs) -> Path:
    """The embedded default: write the synthetic dataset to ``out`` unless its datalist already exists."""
    path = Path(out) / "datalist.json"
    if path.is_file():
        logger.info("using the existing dataset at %s", path)
        return path
    logger.info("no dataset at %s: generating the synthetic HL60-like default", out)
    return write_synthetic_dataset(out, **kwargs)


def ensure_embedded_dataset(dataset_dir: str | Path, embedded_dir: str | Path, generate: bool = True) -> Path | None:
    """The training configs' first data step: when ``dataset_dir`` is the bundle's embedded default
    (``embedded_dir``), write the synthetic dataset there unless it exists; a user's own dataset is left alone.
    ``generate=False`` (the non-zero ranks of a multi-GPU run) does nothing."""
    if not generate or Path(dataset_dir).resolve() != Path(embedded_dir).resolve():
        return None
    return ensure_synthetic_dataset(dataset_dir)


@dataclass(frozen=True)
class CropRanges:
    """How the face-cut preset draws its crops: one microscope per dataset seed (in-plane voxel size, z / in-plane
    ratio), one crop size per volume (in-plane and z extent in µm); each volume is cut out of a larger stack
    (``generate_crop``)."""

    spacing_xy_um: tuple[float, float] = (0.2, 0.5)
    z_over_xy: tuple[float, float] = (1.5, 3.0)
    crop_xy_um: tuple[float, float] = (22.0, 34.0)
    crop_z_um: tuple[float, float] = (14.0, 26.0)

    def draw_spacing(self, rng: np.random.Generator) -> tuple[float, float, float]:
        xy = round(float(rng.uniform(*self.spacing_xy_um)), 3)
        return (xy, xy, round(xy * float(rng.uniform(*self.z_over_xy)), 3))

    def draw_shape(self, rng: np.random.Generator, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
        extent = (rng.uniform(*self.crop_xy_um), rng.uniform(*self.crop_xy_um), rng.uniform(*self.crop_z_um))
        return tuple(max(8, int(round(e / s))) for e, s in zip(extent, spacing))  # type: ignore[return-value]


@dataclass(frozen=True)
class SuiteSpec:
    """One dataset of the generalisation suite: generator model, voxel size (x, y, z) µm, stack shape, counts;
    ``crops``: volumes are crops of larger stacks with spacing and sizes drawn from these ranges (``spacing`` and
    ``shape`` then only describe a typical draw)."""

    name: str
    model: NucleusModel
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    n_train: int
    n_test: int
    description: str
    crops: CropRanges | None = None


MIN_EXTENT_VOX = (5, 5, 3)  # every object spans >= 5 voxels in x and y and >= 3 slices


def _suite(*specs: SuiteSpec) -> dict[str, SuiteSpec]:
    return {spec.name: spec for spec in specs}


SUITE: dict[str, SuiteSpec] = _suite(
    SuiteSpec(
        "hl60",
        NucleusModel(min_extent_vox=MIN_EXTENT_VOX),
        DEFAULT_SPACING,
        DEFAULT_SHAPE,
        13,
        3,
        "the default HL60-like stacks (7-11 µm nuclei), without border slivers thinner than the size rule",
    ),
    SuiteSpec(
        "small-dense",
        NucleusModel(
            diameter_um=(3.4, 4.6),
            n_cells=(60, 60),
            touching_fraction=0.9,
            volume_fraction=0.3,
            psf_sigma_um=(0.12, 0.12, 0.35),
            texture_um=(0.2, 0.6),
            min_extent_vox=MIN_EXTENT_VOX,
        ),
        (0.13, 0.13, 0.28),
        (128, 128, 64),
        1,
        3,
        "4 µm nuclei, touching and clustered, one training volume",
    ),
    SuiteSpec(
        "large-sparse",
        NucleusModel(
            diameter_um=(13.0, 17.0),
            n_cells=(8, 16),
            touching_fraction=0.25,
            psf_sigma_um=(0.5, 0.5, 1.2),
            texture_um=(0.8, 2.5),
            min_extent_vox=MIN_EXTENT_VOX,
        ),
        (1.0, 1.0, 2.0),
        (112, 112, 20),
        3,
        3,
        "15 µm nuclei, few and mostly apart, coarse voxels",
    ),
    SuiteSpec(
        "aniso5",
        NucleusModel(
            diameter_um=(5.0, 7.0),
            n_cells=(20, 45),
            psf_sigma_um=(0.15, 0.15, 0.7),
            texture_um=(0.3, 1.0),
            min_extent_vox=MIN_EXTENT_VOX,
        ),
        (0.2, 0.2, 1.0),
        (160, 160, 24),
        2,
        3,
        "6 µm nuclei, z 5x coarser than x and y",
    ),
    SuiteSpec(
        "low-snr-uint8",
        NucleusModel(
            diameter_um=(7.0, 9.0), n_cells=(15, 35), peak_snr=3.0, dtype="uint8", min_extent_vox=MIN_EXTENT_VOX
        ),
        DEFAULT_SPACING,
        DEFAULT_SHAPE,
        4,
        3,
        "8 µm nuclei at peak SNR ~3, stored as uint8",
    ),
    SuiteSpec(
        "crowd",
        NucleusModel(
            diameter_um=(5.6, 6.6),
            n_cells=(70, 70),
            touching_fraction=0.8,
            small_fraction=0.02,
            dividing_fraction=0.02,
            overlap_tolerance=0.75,
            contact_range=(0.78, 0.95),
            volume_fraction=0.6,
            psf_sigma_um=(0.2, 0.2, 0.5),
            texture_um=(0.3, 1.0),
            min_extent_vox=MIN_EXTENT_VOX,
        ),
        (0.25, 0.25, 0.5),
        (96, 96, 32),
        1,
        3,
        "6 µm nuclei packed to ~60% of the volume, overlapping (the lowest level wins), one training volume",
    ),
    SuiteSpec(
        "face-cut",
        NucleusModel(diameter_um=(6.0, 10.0), n_cells=(400, 400), volume_fraction=0.3, min_visible_fraction=0.0),
        (0.35, 0.35, 0.8),
        (80, 80, 25),
        1,
        3,
        "crops of nuclei (6-10 µm) as users annotate them: spacing and crop size drawn per seed and volume, most "
        "objects cut by a face, slivers of >= 3 voxels kept, one training volume",
        crops=CropRanges(),
    ),
    SuiteSpec(
        "membrane",
        NucleusModel(
            stain="membrane",
            diameter_um=(8.0, 15.0),
            n_cells=(1200, 1200),  # a cap: the tessellation stops when the volume is full
            overlap_tolerance=0.8,
            psf_sigma_um=(0.12, 0.12, 0.35),
            texture_um=(0.4, 2.0),
            photons=(60.0, 200.0),
            min_extent_vox=MIN_EXTENT_VOX,
        ),
        (0.15, 0.15, 0.25),
        (320, 320, 96),
        2,
        3,
        "8-15 µm cells of a packed tissue, bright thin walls (power tessellation), dark interiors; a 48 x 48 x 24 µm "
        "field of view, so most cells are whole (issue 25: the 24 x 24 x 16 µm one held mostly face-cut pieces)",
    ),
)


def write_suite_dataset(name: str, out: str | Path, seed: int = 0, mask_fraction: float = 0.2) -> Path:
    """Write suite dataset ``name`` (a key of ``SUITE``) to ``out``: training and test, no validation.

    Returns the datalist path.
    """
    if name not in SUITE:
        raise KeyError(f"unknown suite dataset {name!r}; choose from {sorted(SUITE)}")
    spec = SUITE[name]
    if spec.crops is None:
        return write_synthetic_dataset(
            out, spec.n_train, 0, spec.n_test, mask_fraction, seed, spec.shape, spec.spacing, model=spec.model
        )
    rng = np.random.default_rng([seed, 0xC207])
    spacing = spec.crops.draw_spacing(rng)
    sections: dict[str, list[dict]] = {}
    parts = [("training", spec.n_train, "train"), ("test", spec.n_test, "test")]
    for s_index, (section, count, prefix) in enumerate(parts):
        items = []
        for i in range(count):
            name_i = f"{prefix}_{i:03d}"
            shape = spec.crops.draw_shape(rng, spacing)
            image, instances = generate_crop([seed, s_index, i], shape, spacing, spec.model)
            items.append(write_item(Path(out), name_i, image, instances, spacing, mask_fraction, seed))
        sections[section] = items
    sections["validation"] = []
    return write_datalist(out, {k: sections[k] for k in ("training", "validation", "test")})
