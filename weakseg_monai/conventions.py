"""The project's axis, box and label conventions, written once and asserted at the edges.

- Spatial order is **(x, y, z)**, z the coarse axis: the order MONAI's ``LoadImage`` returns for NIfTI and
  for 3D TIFF alike (it turns a TIFF stored (z, y, x) around itself). Sizes, spacings, boxes and every
  JSON field follow it. Tensors are channel-first ``(C, x, y, z)``; batches ``(N, C, x, y, z)``.
- Boxes are half-open voxel boxes ``[x0, y0, z0, x1, y1, z1)``: voxel i spans [i, i+1), so ``x1`` is the
  largest index + 1 (what ``monai.data.box_utils.convert_mask_to_box`` returns; MONAI ``StandardMode``).
- Dataset ``label`` 0 is the first object class; inside the model the class index is ``label + 1`` and
  0 is background.
- Spacing is in µm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.data.box_utils import StandardMode

SPATIAL_AXES = ("x", "y", "z")
BOX_MODE = StandardMode
BACKGROUND_CLASS = 0


def label_to_class_index(label: int | np.ndarray) -> int | np.ndarray:
    """Dataset label (0 = first object class) -> model class index (0 = background)."""
    return label + 1


def as_boxes(boxes: Sequence | np.ndarray, spatial_shape: Sequence[int] | None = None) -> np.ndarray:
    """Return ``boxes`` as a float ``(N, 6)`` array, asserting the box convention.

    Raises ``ValueError`` for a wrong shape, a non-positive size or (with ``spatial_shape``) a box that
    leaves the image ``[0, shape)``.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 6), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise ValueError(f"boxes must have shape (N, 6) as [x0, y0, z0, x1, y1, z1], got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("boxes contain NaN or inf")
    bad = np.nonzero((arr[:, 3:] <= arr[:, :3]).any(axis=1))[0]
    if bad.size:
        raise ValueError(f"boxes {bad.tolist()} have a non-positive size (need x0 < x1, y0 < y1, z0 < z1)")
    if spatial_shape is not None:
        shape = np.asarray(spatial_shape, dtype=np.float64)
        out = np.nonzero((arr[:, :3] < 0).any(axis=1) | (arr[:, 3:] > shape).any(axis=1))[0]
        if out.size:
            raise ValueError(f"boxes {out.tolist()} leave the image of size (x, y, z) = {tuple(spatial_shape)}")
    return arr


def as_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    """Return a validated (x, y, z) spacing in µm: three finite positive numbers."""
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive numbers (x, y, z) in µm, got {spacing!r}")
    return values  # type: ignore[return-value]


_UM_PER_UNIT = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,  # Greek mu, as OME writes it
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "\\u00B5m": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "Å": 1e-4,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "centimeter": 1e4,
    "angstrom": 1e-4,
    "picometer": 1e-6,
}


def um_per_unit(unit: str, source: object) -> float:
    """µm per ``unit`` (OME ``PhysicalSize*Unit``, ImageJ ``unit``, OME-Zarr axis ``unit``); an unknown unit is an
    error naming ``source`` (the file)."""
    key = unit.strip()
    if key in _UM_PER_UNIT:
        return _UM_PER_UNIT[key]
    if key.lower() in _UM_PER_UNIT:
        return _UM_PER_UNIT[key.lower()]
    if key.lower() in ("pixel", "pixels", ""):  # ImageJ's "no calibration"
        return 1.0
    raise ValueError(f"{source}: unknown physical size unit {unit!r} in the file's metadata (use nm, µm or mm)")


def as_size(value: object, name: str) -> tuple[int, int, int]:
    """Three positive whole numbers (x, y, z), e.g. a block or window size; ``name`` (the flag) in the error."""
    try:
        values = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and v >= 1 and v == int(v) for v in values):
        raise ValueError(f"{name} must be three positive whole numbers (x, y, z), got {value!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def as_count(value: object, name: str, minimum: int = 1) -> int:
    """A whole number >= ``minimum`` (a voxel budget, an iteration count); ``name`` (the flag) in the error."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and number == int(number) and number >= minimum) or isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(number)


def as_fraction(value: object, name: str, low: float = 0.0, high: float = 1.0, high_open: bool = False) -> float:
    """A number in ``[low, high]`` (``[low, high)`` with ``high_open``); ``name`` (the flag) in the error."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    inside = low <= number < high if high_open else low <= number <= high
    if not inside or isinstance(value, bool):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}{bracket}, got {value!r}")
    return number


FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def as_flag(value: bool | int | str, name: str) -> bool:
    """A yes/no option as a bool. The bundle command line passes ``--preview false`` as the string "false"
    (fire only knows Python literals), which ``bool()`` would read as true."""
    if isinstance(value, (bool, int, np.integer)) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in FLAG_WORDS:
        return FLAG_WORDS[word]
    raise ValueError(f"{name} must be true or false, got {value!r}")


def assert_volume_3d(array: np.ndarray, name: str = "volume") -> np.ndarray:
    """Assert a spatial ``(x, y, z)`` array (no channel axis)."""
    if array.ndim != 3:
        raise ValueError(f"{name} must be a 3D (x, y, z) volume, got {array.ndim} dimensions {tuple(array.shape)}")
    return array
