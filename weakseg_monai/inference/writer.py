"""Writing predictions next to their inputs' geometry: label volume, boxes JSON and a preview PNG.

Every file is written to a temporary name and renamed at the end, so a failed input leaves no partial
output behind.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from weakseg_monai.data.io import TIFF_SUFFIXES, is_nifti, read_volume, resolve_spacing, write_volume
from weakseg_monai.data.preview import save_preview

logger = logging.getLogger(__name__)
INPUT_SUFFIXES = (".nii", ".nii.gz", *TIFF_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def list_inputs(input_path: str | Path) -> list[Path]:
    """One file, or the NIfTI / TIFF files of a folder (sorted)."""
    path = Path(input_path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(INPUT_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"no NIfTI or TIFF files in {path}")
        return files
    raise FileNotFoundError(f"no such file or folder: {path}")


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
    affine = None
    if is_nifti(path):
        import nibabel as nib

        affine = nib.load(str(path)).affine
    return array, resolve_spacing(path, spacing), affine


def save_prediction(
    prediction: dict[str, np.ndarray],
    image: np.ndarray,
    source: Path,
    output_dir: str | Path,
    spacing: tuple[float, float, float],
    affine: np.ndarray | None = None,
    preview: bool = True,
) -> dict[str, Path]:
    """Write ``<stem>_instances.<same format>``, ``<stem>_boxes.json`` and ``<stem>_preview.png``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(source)
    suffix = ".nii.gz" if is_nifti(source) else ".tif"
    targets = {"instances": out / f"{stem}_instances{suffix}", "boxes": out / f"{stem}_boxes.json"}
    if preview:
        targets["preview"] = out / f"{stem}_preview.png"
    temporary = {k: v.with_name(f".tmp_{os.getpid()}_{v.name}") for k, v in targets.items()}
    try:
        instances = prediction["instances"].astype(np.uint16 if prediction["instances"].max() < 65536 else np.int32)
        write_volume(temporary["instances"], instances, spacing, affine=affine)
        payload = {
            "image": str(source),
            "spacing": list(spacing),
            "axes": "x, y, z (voxels of the input image, half-open boxes [x0, y0, z0, x1, y1, z1])",
            "boxes": np.round(prediction["boxes"], 2).tolist(),
            "scores": np.round(prediction["scores"], 4).tolist(),
            "labels": prediction["labels"].astype(int).tolist(),
            "instance_values": list(range(1, len(prediction["boxes"]) + 1)),
        }
        temporary["boxes"].write_text(json.dumps(payload, indent=4))
        if preview:
            save_preview(
                temporary["preview"],
                image,
                prediction["instances"],
                spacing,
                f"{stem}: {len(prediction['boxes'])} instances",
            )
        for key, path in temporary.items():
            path.replace(targets[key])
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)
    return targets


def run_inference(
    predictor,
    input_path: str | Path,
    output_dir: str | Path,
    preview: bool = True,
    spacing: Sequence[float] | None = None,
) -> list[dict]:
    """Predict every input (one file or a folder) and write its outputs; raise at the end if any failed.

    ``spacing``: (x, y, z) µm for every input, overriding the files' own (e.g. TIFFs without metadata).

    Returns one summary dict per input (path, instances, seconds).
    """
    import torch

    files = list_inputs(input_path)
    summaries, failures = [], []
    for i, path in enumerate(files, start=1):
        start = time.perf_counter()
        try:
            array, used_spacing, affine = load_input(path, spacing)
            prediction = predictor(torch.from_numpy(array.astype(np.float32))[None], used_spacing)
            written = save_prediction(prediction, array, path, output_dir, used_spacing, affine, preview)
        except (OSError, ValueError, RuntimeError) as err:
            logger.error("[%d/%d] %s: %s", i, len(files), path, err)
            failures.append(f"{path}: {err}")
            continue
        seconds = time.perf_counter() - start
        logger.info(
            "[%d/%d] %s: %d instances in %.1f s -> %s",
            i,
            len(files),
            path.name,
            len(prediction["boxes"]),
            seconds,
            written["instances"],
        )
        summaries.append({"image": str(path), "instances": len(prediction["boxes"]), "seconds": seconds})
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(files)} inputs failed:\n  " + "\n  ".join(failures))
    return summaries


__all__ = ["run_inference", "save_prediction", "list_inputs", "load_input"]
