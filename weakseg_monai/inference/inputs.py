"""Inputs of an inference run: which files a path names (``list_inputs``, ``input_items``) and how one is read and
checked (``load_input``, ``LoadInputd``, the dictionary transform ``inference.json`` starts with)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform

from weakseg_monai.conventions import as_spacing
from weakseg_monai.data.io import (
    PREDICTION_SUFFIX,
    is_nifti,
    is_volume_path,
    is_zarr,
    nifti_affine,
    read_volume,
    resolve_spacing,
    volume_stem,
)
from weakseg_monai.transforms.dictionary import finite_float32

logger = logging.getLogger(__name__)


def list_inputs(input_path: str | Path) -> list[Path]:
    """One file (or OME-Zarr folder), or the NIfTI / TIFF / OME-Zarr volumes of a folder (sorted), without our own
    label outputs
    (``*_instances.*``), so a folder that holds earlier predictions does not get them segmented as images.

    Raises before any work when two inputs would write the same outputs (``a.nii.gz`` and ``a.tif``).
    """
    path = Path(str(input_path))  # a folder named by a number (2024) reaches us as an int from the command line
    if path.is_file() or (is_zarr(path) and path.is_dir()):
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    files = sorted(p for p in path.iterdir() if is_volume_path(p))
    ours = [p for p in files if volume_stem(p).endswith(PREDICTION_SUFFIX)]
    if ours:
        logger.info("%s: skipping %d earlier prediction(s) (*%s.*)", path, len(ours), PREDICTION_SUFFIX)
    files = [p for p in files if p not in ours]
    if not files and ours:
        raise FileNotFoundError(
            f"{path} holds only earlier predictions ({len(ours)} *{PREDICTION_SUFFIX}.* files, skipped as outputs, "
            f"e.g. {ours[0].name}): point --input_dir at the images"
        )
    if not files:
        raise FileNotFoundError(f"no NIfTI or TIFF files in {path}")
    by_stem: dict[str, list[str]] = {}
    for p in files:
        by_stem.setdefault(volume_stem(p), []).append(p.name)
    clashes = {stem: names for stem, names in by_stem.items() if len(names) > 1}
    if clashes:
        listed = "; ".join(f"{' and '.join(names)} -> {stem}{PREDICTION_SUFFIX}.*" for stem, names in clashes.items())
        raise ValueError(
            f"{path}: inputs whose outputs would overwrite each other: {listed}. Rename one of each, or run them "
            "into different --output_dir folders"
        )
    return files


def input_items(input_path: str | Path) -> list[dict]:
    """The dataset of an inference run: ``{"image": path}`` per input (``list_inputs``)."""
    return [{"image": str(path)} for path in list_inputs(input_path)]


def load_input(
    path: Path, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray | None]:
    """Read and check one input: (x, y, z) array, spacing, NIfTI affine (None for TIFF).

    ``spacing`` (x, y, z) µm, when given, overrides what the file says (the datalist's rule for training).
    """
    array = read_volume(path)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(
            f"{path}: expected a single-channel 3D volume (x, y, z), got shape {array.shape}"
            + (" (several channels: split them and pass the nuclear channel)" if array.ndim == 4 else "")
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{path}: contains NaN or inf intensities")
    array = finite_float32(array, str(path))
    affine = nifti_affine(path) if is_nifti(path) else None
    return array, resolve_spacing(path, spacing), affine


class LoadInputd(MapTransform):
    """``{"image": path}`` -> ``image (1, X, Y, Z)`` float32 tensor, ``spacing``, ``affine`` (NIfTI, else None),
    ``path``, ``error`` (``load_input``'s checks and spacing rule; ``spacing`` overrides the file's own), and
    ``input_image``, the same tensor, kept for the preview when later transforms resample ``image``.

    An input that cannot be read or is not a single-channel 3D volume gives ``image = None`` and the message in
    ``error``: the run goes on with the other inputs and ``PredictionWriter`` reports every failure at the end.
    """

    def __init__(self, keys: str = "image", spacing: Sequence[float] | None = None) -> None:
        super().__init__(keys=keys)
        if spacing is not None:
            try:
                spacing = as_spacing(spacing)
            except (TypeError, ValueError):
                raise ValueError(f"--spacing must be three positive numbers (x, y, z) in µm, got {spacing!r}") from None
        self.spacing = spacing

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        key = self.keys[0]
        path = Path(d[key])
        d.update(path=str(path), error=None, spacing=None, affine=None)
        try:
            array, d["spacing"], d["affine"] = load_input(path, self.spacing)
            d[key] = d["input_image"] = torch.from_numpy(array)[None]
        except (OSError, ValueError, RuntimeError) as err:
            d[key] = None
            d["error"] = str(err)
        return d


__all__ = ["LoadInputd", "input_items", "list_inputs", "load_input"]
