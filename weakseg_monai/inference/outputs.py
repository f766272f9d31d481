"""Outputs of an inference run: the output folder checked before any work (``check_output_dir``, which also removes
what a killed run left), and one prediction written beside its input's geometry (``save_prediction``: label volume,
``NAME_boxes.json``, preview PNG). Every file is written to a temporary name and renamed at the end, so a failed
input leaves no partial output behind."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from weakseg_monai.data.io import (
    BOXES_SUFFIX,
    PREDICTION_SUFFIX,
    is_nifti,
    is_zarr,
    remove_path,
    replace_path,
    volume_stem,
    write_volume,
)
from weakseg_monai.data.omezarr import write_zarr_labels
from weakseg_monai.data.preview import save_preview

logger = logging.getLogger(__name__)

OUTPUT_SUFFIX = PREDICTION_SUFFIX  # NAME_instances.EXT, NAME_boxes.json, NAME_preview.png: a promise to readers
output_stem = volume_stem  # the stem every output of an input is named by (``weakseg_monai.data.io``)


def check_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` and check it is writable, before any prediction is computed."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".tmp_{os.getpid()}_write_check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or err
        raise OSError(f"output folder {out} is not writable ({reason}); choose another --output_dir") from err
    remove_stale_temporaries(out)
    return out


def remove_stale_temporaries(out: Path) -> None:
    """Delete ``.tmp_PID_*`` files that a killed run (a PID no longer alive) left in ``out``."""
    for tmp in out.glob(".tmp_*_*"):
        pid = tmp.name.split("_")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            remove_path(tmp)
            logger.info("removed %s, left by an interrupted run", tmp)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    stem = output_stem(source)
    suffix = ".nii.gz" if is_nifti(source) else ".ome.zarr" if is_zarr(source) else ".tif"
    targets = {"instances": out / f"{stem}_instances{suffix}", "boxes": out / f"{stem}{BOXES_SUFFIX}"}
    if preview:
        targets["preview"] = out / f"{stem}_preview.png"
    temporary = {k: v.with_name(f".tmp_{os.getpid()}_{v.name}") for k, v in targets.items()}
    try:
        instances = prediction["instances"].astype(np.uint16 if prediction["instances"].max() < 65536 else np.int32)
        if is_zarr(source):  # labels/instances of an OME-Zarr store: napari-ome-zarr shows them as labels
            write_zarr_labels(temporary["instances"], instances, spacing)
        else:
            write_volume(temporary["instances"], instances, spacing, affine=affine)
        write_boxes_json(temporary["boxes"], prediction, source, spacing)
        if preview:
            save_preview(
                temporary["preview"],
                image,
                prediction["instances"],
                spacing,
                f"{stem}: {len(prediction['boxes'])} instances",
            )
        for key, path in temporary.items():
            replace_path(path, targets[key])
    finally:
        for path in temporary.values():
            remove_path(path)
    return targets


def write_boxes_json(path: Path, prediction: dict[str, np.ndarray], source: Path, spacing: Sequence[float]) -> Path:
    """``NAME_boxes.json``: the boxes (input voxels, x, y, z, half-open), scores and dataset labels of a prediction;
    instance ``k`` of the label volume has value ``k + 1``."""
    payload = {
        "image": str(source),
        "spacing": list(spacing),
        "axes": "x, y, z (voxels of the input image, half-open boxes [x0, y0, z0, x1, y1, z1])",
        "boxes": np.round(prediction["boxes"], 2).tolist(),
        "scores": np.round(prediction["scores"], 4).tolist(),
        "labels": np.asarray(prediction["labels"]).astype(int).tolist(),
        "instance_values": list(range(1, len(prediction["boxes"]) + 1)),
    }
    path.write_text(json.dumps(payload, indent=4))
    return path


__all__ = [
    "OUTPUT_SUFFIX",
    "check_output_dir",
    "output_stem",
    "process_alive",
    "remove_stale_temporaries",
    "save_prediction",
    "write_boxes_json",
]
