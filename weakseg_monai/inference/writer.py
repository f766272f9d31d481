"""The inference workflow around ``WeakSegInferer``: inputs listed (``input_items``) and loaded (``LoadInputd``),
predictions written next to their inputs' geometry (``PredictionWriter``: label volume, boxes JSON, preview PNG).
``inference.json`` composes these pieces; ``run_inference`` builds the same workflow in Python.

Every file is written to a temporary name and renamed at the end, so a failed input leaves no partial
output behind; a failed input does not stop the others, and the run raises at the end naming every failure.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.data.utils import no_collation
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose, MapTransform
from monai.utils.enums import CommonKeys as Keys

from weakseg_monai.conventions import as_flag, as_spacing
from weakseg_monai.data.io import (
    BOXES_SUFFIX,
    PREDICTION_SUFFIX,
    is_nifti,
    is_volume_path,
    is_zarr,
    nifti_affine,
    read_volume,
    remove_path,
    replace_path,
    resolve_spacing,
    volume_stem,
    write_volume,
)
from weakseg_monai.data.omezarr import write_zarr_labels
from weakseg_monai.data.preview import save_preview
from weakseg_monai.inference.inferer import WeakSegInferer, prepare_instance_batch
from weakseg_monai.inference.predictor import scale_mismatch
from weakseg_monai.networks.family import unwrap
from weakseg_monai.transforms.dictionary import finite_float32

logger = logging.getLogger(__name__)


OUTPUT_SUFFIX = PREDICTION_SUFFIX  # NAME_instances.EXT, NAME_boxes.json, NAME_preview.png: a promise to readers
output_stem = volume_stem  # the stem every output of an input is named by (``weakseg_monai.data.io``)


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
    ours = [p for p in files if output_stem(p).endswith(OUTPUT_SUFFIX)]
    if ours:
        logger.info("%s: skipping %d earlier prediction(s) (*%s.*)", path, len(ours), OUTPUT_SUFFIX)
    files = [p for p in files if p not in ours]
    if not files and ours:
        raise FileNotFoundError(
            f"{path} holds only earlier predictions ({len(ours)} *{OUTPUT_SUFFIX}.* files, skipped as outputs, e.g. "
            f"{ours[0].name}): point --input_dir at the images"
        )
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
            remove_path(tmp)
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
    array = finite_float32(array, str(path))
    affine = nifti_affine(path) if is_nifti(path) else None
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


def failure_outcome(path: str | Path, error: str) -> tuple[str, str]:
    """``(log message, table cell)`` of an input that failed: the message names the path once, the cell (beside the
    path's own column) not at all."""
    message = error if str(path) in error else f"{path}: {error}"
    return message, f"FAILED: {error.replace(str(path) + ': ', '')}"


def failure_table(failed: int, total: int, outcomes: Sequence[tuple[str, str]]) -> str:
    """The last lines of a run with failures: how many, and a table of every input and what became of it."""
    rows = "\n".join(f"| {path} | {outcome} |" for path, outcome in outcomes)
    written = " (the others were written)" if failed < total else ""
    return f"{failed} of {total} inputs failed{written}:\n| input | result |\n|---|---|\n{rows}"


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


def input_items(input_path: str | Path) -> list[dict]:
    """The dataset of an inference run: ``{"image": path}`` per input (``list_inputs``)."""
    return [{"image": str(path)} for path in list_inputs(input_path)]


class PredictionWriter:
    """Ignite handler of an inference evaluator: write each prediction next to its input's geometry
    (``save_prediction``), warn on an implausible object scale, and raise at the end if any input failed.

    Reads ``engine.state.output``: ``image`` (the loaded volumes), ``label`` (the items' ``path``, ``spacing``,
    ``affine``, ``error``, from ``prepare_instance_batch``) and ``pred`` (``WeakSegInferer`` predictions).
    The output folder is checked before the first prediction; while the engine runs, SIGTERM exits through
    the writers' clean-up (no temporary file left behind).
    """

    def __init__(self, output_dir: str | Path, preview: bool = True) -> None:
        self.output_dir = Path(str(output_dir))
        self.preview = as_flag(preview, "preview")
        self.summaries: list[dict] = []
        self.failures: list[str] = []
        self.outcomes: list[tuple[str, str]] = []  # (input, what became of it), in order, for the final table
        self._previous_handler = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def started(self, engine: Engine) -> None:
        check_output_dir(self.output_dir)
        self.summaries, self.failures, self.outcomes = [], [], []
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, _exit_on_signal)

    def write(self, engine: Engine) -> None:
        output = engine.state.output
        for image, item, pred in zip(output[Keys.IMAGE], output[Keys.LABEL], output[Keys.PRED]):
            path = Path(item["path"])
            error = item.get("error") or (pred or {}).get("error")
            number = f"[{len(self.summaries) + len(self.failures) + 1}/{engine.state.epoch_length}]"
            if not error:
                try:
                    array = item.get("input_image", image)[0].cpu().numpy()
                    spacing, affine = item["spacing"], item["affine"]
                    written = save_prediction(pred, array, path, self.output_dir, spacing, affine, self.preview)
                except (OSError, ValueError, RuntimeError) as err:
                    error = str(err)
            if error:
                message, outcome = failure_outcome(path, error)
                logger.error("%s %s", number, message)
                self.failures.append(message)
                self.outcomes.append((str(path), outcome))
                continue
            warning = scale_mismatch(pred["boxes"], item["spacing"], unwrap(engine.network))
            if warning:
                logger.warning("%s: %s", path, warning)
            n, seconds = len(pred["boxes"]), float(pred.get("seconds", float("nan")))
            logger.info("%s %s: %d instances in %.1f s -> %s", number, path.name, n, seconds, written["instances"])
            self.summaries.append({"image": str(path), "instances": n, "seconds": seconds})
            self.outcomes.append((str(path), f"{n} instances -> {written['instances']}"))

    def restore_signal(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def completed(self, engine: Engine) -> None:
        self.restore_signal()
        if self.failures:
            total = len(self.failures) + len(self.summaries)
            raise RuntimeError(failure_table(len(self.failures), total, self.outcomes))

    def exception_raised(self, engine: Engine, err: Exception) -> None:
        self.restore_signal()
        raise err


def _exit_on_signal(signum, _frame):
    """SIGTERM (a scheduler's kill, Ctrl-C's cousin) raises SystemExit, so ``finally`` blocks clean up."""
    raise SystemExit(128 + signum)


def inference_evaluator(
    inferer: WeakSegInferer,
    network: torch.nn.Module,
    input_path: str | Path,
    output_dir: str | Path,
    preview: bool = True,
    spacing: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[SupervisedEvaluator, PredictionWriter]:
    """The inference workflow ``inference.json`` composes, built in Python: ``Dataset(input_items, LoadInputd +
    ToWorkingGridd)``,
    ``DataLoader(no_collation)``, ``SupervisedEvaluator(prepare_instance_batch, inferer)`` and a
    ``PredictionWriter``."""
    preprocessing = Compose([LoadInputd(spacing=spacing), inferer.predictor_for(network).working_grid()])
    dataset = Dataset(input_items(input_path), transform=preprocessing)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0, collate_fn=no_collation)
    writer = PredictionWriter(output_dir, preview)
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=loader,
        network=network,
        prepare_batch=prepare_instance_batch,
        inferer=inferer,
        val_handlers=[writer],
        decollate=False,
    )
    return evaluator, writer


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
    inferer = WeakSegInferer(predictor, record_errors=True)
    evaluator, writer = inference_evaluator(
        inferer, predictor.network, input_path, output_dir, preview, spacing, predictor.device
    )
    evaluator.run()
    return writer.summaries


__all__ = [
    "LoadInputd",
    "PredictionWriter",
    "check_output_dir",
    "failure_outcome",
    "failure_table",
    "inference_evaluator",
    "input_items",
    "list_inputs",
    "load_input",
    "output_stem",
    "run_inference",
    "save_prediction",
    "write_boxes_json",
]
