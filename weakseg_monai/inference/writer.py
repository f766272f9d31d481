"""Writing predictions next to their inputs' geometry: label volume, boxes JSON and a preview PNG.

Every file is written to a temporary name and renamed at the end, so a failed input leaves no partial
output behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from weakseg_monai.data.io import TIFF_SUFFIXES, is_nifti, read_volume, resolve_spacing, write_volume
from weakseg_monai.data.preview import save_preview
from weakseg_monai.inference.predictor import scale_mismatch

logger = logging.getLogger(__name__)
INPUT_SUFFIXES = (".nii", ".nii.gz", *TIFF_SUFFIXES)


OUTPUT_SUFFIX = "_instances"  # NAME_instances.EXT, NAME_boxes.json, NAME_preview.png: a promise to readers


def output_stem(path: Path) -> str:
    """``NAME`` of ``NAME.nii.gz`` / ``NAME.ome.tif`` / ...: the stem every output of that input is named by."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def list_inputs(input_path: str | Path) -> list[Path]:
    """One file, or the NIfTI / TIFF files of a folder (sorted), without our own label outputs
    (``*_instances.*``), so a folder that holds earlier predictions does not get them segmented as images.

    Raises before any work when two inputs would write the same outputs (``a.nii.gz`` and ``a.tif``).
    """
    path = Path(input_path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(INPUT_SUFFIXES))
    ours = [p for p in files if output_stem(p).endswith(OUTPUT_SUFFIX)]
    if ours:
        logger.info("%s: skipping %d earlier prediction(s) (*%s.*)", path, len(ours), OUTPUT_SUFFIX)
    files = [p for p in files if p not in ours]
    if not files:
        raise FileNotFoundError(f"no NIfTI or TIFF files in {path}")
    by_stem: dict[str, list[str]] = {}
    for p in files:
        by_stem.setdefault(output_stem(p), []).append(p.name)
    clashes = {stem: names for stem, names in by_stem.items() if len(names) > 1}
    if clashes:
        listed = "; ".join(f"{' and '.join(names)} -> {stem}{OUTPUT_SUFFIX}.*" for stem, names in clashes.items())
        raise ValueError(
            f"{path}: inputs whose outputs would overwrite each other: {listed}. Rename one of each, or run them "
            "into different --output_dir folders"
        )
    return files


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
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            logger.info("removed %s, left by an interrupted run", tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    stem = output_stem(source)
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
    files = list_inputs(input_path)
    check_output_dir(output_dir)
    with _terminate_as_exit():
        return _predict_all(predictor, files, output_dir, preview, spacing)


@contextmanager
def _terminate_as_exit():
    """SIGTERM (a scheduler's kill, Ctrl-C's cousin) raises SystemExit while inference runs, so the writers'
    ``finally`` blocks remove their temporary files instead of leaving them behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _predict_all(predictor, files: list[Path], output_dir, preview: bool, spacing) -> list[dict]:
    import torch

    summaries, failures = [], []
    for i, path in enumerate(files, start=1):
        start = time.perf_counter()
        try:
            array, used_spacing, affine = load_input(path, spacing)
            prediction = predictor(torch.from_numpy(array.astype(np.float32))[None], used_spacing)
            written = save_prediction(prediction, array, path, output_dir, used_spacing, affine, preview)
            network = getattr(predictor, "network", None)
            warning = None
            if hasattr(network, "anchor_shapes"):  # the weak model (the baseline has no trained object size)
                warning = scale_mismatch(prediction["boxes"], used_spacing, network)
            if warning:
                logger.warning("%s: %s", path, warning)
        except (OSError, ValueError, RuntimeError) as err:
            message = str(err) if str(path) in str(err) else f"{path}: {err}"  # no path twice
            logger.error("[%d/%d] %s", i, len(files), message)
            failures.append(message)
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


__all__ = ["run_inference", "save_prediction", "list_inputs", "load_input", "output_stem", "check_output_dir"]
