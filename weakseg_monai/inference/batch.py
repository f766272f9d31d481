"""Many stacks, and stacks larger than memory: the ``scheduler`` path of ``inference.json`` (``BatchInference``).

- **One task per stack** for the stacks that fit in memory: a dask task reads the stack, runs ``WeakSegPredictor``
  (whole or block by block in memory, as the evaluator does) and writes its outputs (``save_prediction``). The
  tasks run on ``scheduler`` (``local:N`` or a cluster's address) and each stack's outputs are written as soon as
  it finishes, with one progress line per stack.
- **Blockwise on dask** for a stack of more than ``max_memory_voxels`` voxels (any format): it is never read whole
  (``weakseg_monai.data.io.lazy_volume``); ``segment_volume`` runs its blocks as tasks on the same scheduler and
  writes OME-Zarr labels. A NIfTI / TIFF stack's labels are then written in its own format (the promise of
  ``NAME_instances.<same format>``; that needs the label volume in memory once, so beyond memory keep OME-Zarr).
- A stack that fails is reported in a final table that does not stop the others (as ``PredictionWriter``).

With ``scheduler: null`` and no stack above ``max_memory_voxels``, ``run`` is the bundle's ``SupervisedEvaluator``
workflow (``evaluator.run()``), unchanged.

Why not ``PredictionWriter`` inside dask tasks: an Ignite engine per stack would add nothing a task needs (no
batches, no metrics) and would not pickle; the writer's pieces (``load_input``, ``save_prediction``,
``failure_table``) are what both paths share.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from weakseg_monai.conventions import as_count, as_flag, as_size, as_spacing
from weakseg_monai.data.io import (
    BOXES_SUFFIX,
    is_nifti,
    is_zarr,
    lazy_volume,
    nifti_affine,
    remove_path,
    replace_path,
    volume_shape,
    write_volume,
)
from weakseg_monai.data.omezarr import open_labels
from weakseg_monai.data.preview import save_preview
from weakseg_monai.inference.distributed import checked_scheduler, dask_client, segment_volume
from weakseg_monai.inference.failures import failure_outcome, failure_table
from weakseg_monai.inference.inputs import list_inputs, load_input
from weakseg_monai.inference.outputs import check_output_dir, output_stem, save_prediction, write_boxes_json
from weakseg_monai.inference.predictor import WeakSegPredictor, scale_mismatch
from weakseg_monai.networks.family import InstanceModel, unwrap

logger = logging.getLogger(__name__)

MAX_MEMORY_VOXELS = 2**27  # 134M voxels (512 MB as float32): above, a stack is segmented blockwise, never read whole
PREVIEW_SIDE = 512  # voxels: the preview of a blockwise stack is drawn from a subsample this wide in x and y


def segment_stack(
    network: InstanceModel,
    path: str,
    output_dir: str,
    spacing: Sequence[float] | None,
    preview: bool,
    predictor_kwargs: dict,
) -> dict:
    """One stack that fits in memory, as one task: read (``load_input``), predict, write (``save_prediction``).
    Returns its summary: ``image``, ``instances``, ``seconds``, ``output``, ``warning`` (or None)."""
    array, spacing_um, affine = load_input(Path(path), spacing)
    predictor = WeakSegPredictor(network, **predictor_kwargs)
    start = time.perf_counter()
    with torch.inference_mode():
        prediction = predictor(torch.from_numpy(array)[None], spacing_um)
    seconds = time.perf_counter() - start
    written = save_prediction(prediction, array, Path(path), output_dir, spacing_um, affine, preview)
    return {
        "image": str(path),
        "instances": int(len(prediction["boxes"])),
        "seconds": seconds,
        "output": str(written["instances"]),
        "warning": scale_mismatch(prediction["boxes"], spacing_um, network, array.shape),
    }


def segment_large_stack(
    network: InstanceModel,
    path: Path,
    output_dir: Path,
    spacing: Sequence[float] | None,
    preview: bool,
    client,
    block_size: Sequence[int],
    spill_dir: str | None = None,
) -> dict:
    """A stack larger than memory: ``segment_volume`` block by block on ``client`` (None: in this process), labels
    to ``NAME_instances.ome.zarr`` (or, for a NIfTI / TIFF stack, to its own format), boxes JSON, a preview from a
    subsample."""
    volume, spacing_um = lazy_volume(path, spacing)
    stem = output_stem(path)
    suffix = ".ome.zarr" if is_zarr(path) else ".nii.gz" if is_nifti(path) else ".tif"
    target = output_dir / f"{stem}_instances{suffix}"
    # written beside the target and renamed at the end: an earlier result stays until this one is whole
    staging = output_dir / f".tmp_{os.getpid()}_{stem}_instances.ome.zarr"
    remove_path(staging)
    start = time.perf_counter()
    try:
        found = segment_volume(network, volume, spacing_um, staging, scheduler=client, block_size=block_size,
                               spill_dir=spill_dir, name=path.name)
        seconds = time.perf_counter() - start
        labels = open_labels(staging)
        prediction = {k: found[k] for k in ("boxes", "scores", "labels")}
        write_boxes_json(output_dir / f"{stem}{BOXES_SUFFIX}", prediction, path, spacing_um)
        if preview:
            step = [max(1, int(np.ceil(s / PREVIEW_SIDE))) for s in volume.shape]
            index = tuple(slice(None, None, k) for k in step)
            every = "" if step == [1, 1, 1] else f" (every {' x '.join(map(str, step))} voxels)"
            save_preview(output_dir / f"{stem}_preview.png", np.asarray(volume[index].compute()),
                         np.asarray(labels[index].compute()), [s * k for s, k in zip(spacing_um, step)],
                         f"{stem}: {len(found['boxes'])} instances{every}")
        if is_zarr(path):
            replace_path(staging, target)
        else:
            partial = target.with_name(f".tmp_{os.getpid()}_{target.name}")
            affine = nifti_affine(path) if is_nifti(path) else None
            array = np.asarray(labels.compute())
            write_volume(partial, array.astype(np.uint16) if array.max(initial=0) < 65536 else array, spacing_um,
                         affine=affine)
            replace_path(partial, target)
    finally:
        remove_path(staging)
    return {
        "image": str(path),
        "instances": int(len(found["boxes"])),
        "seconds": seconds,
        "output": str(target),
        "warning": scale_mismatch(found["boxes"], spacing_um, network, volume.shape),
    }


class BatchInference:
    """The ``run`` of ``inference.json``: the bundle's evaluator, or, with a ``scheduler`` or a stack above
    ``max_memory_voxels``, the dask path of this module.

    Args:
        evaluator: the bundle's ``SupervisedEvaluator`` (what ``scheduler: null`` runs when every stack fits).
        ckpt_path: the model file (the dask path loads it itself; the evaluator's handler loads it for its run).
        input_path: one stack or a folder (``list_inputs``).
        output_dir: where every stack's outputs go.
        scheduler: ``None`` (in this process), ``"local:N"`` (a ``distributed.LocalCluster`` of N worker
            processes) or the address of a running dask scheduler (``tcp://host:8786``).
        spacing: (x, y, z) µm for every stack, overriding the files' own.
        preview: write ``NAME_preview.png``.
        max_whole_voxels, block_size, sw_roi_size, sw_overlap, sw_batch_size: the predictor's (``WeakSegPredictor``).
        max_memory_voxels: stacks with more voxels than this go blockwise on dask, never read whole.
        spill_dir: where their blocks' masks wait between the two phases (default: the system's temporary folder);
            on a cluster of several machines, a folder every worker sees (as the inputs and ``output_dir``).
        device: where the network runs in this process (workers use their CPU).
    """

    def __init__(
        self,
        evaluator,
        ckpt_path: str | Path,
        input_path: str | Path,
        output_dir: str | Path,
        scheduler: str | None = None,
        spacing: Sequence[float] | None = None,
        preview: bool = True,
        max_whole_voxels: int = 4_000_000,
        block_size: Sequence[int] = (192, 192, 64),
        max_memory_voxels: int = MAX_MEMORY_VOXELS,
        spill_dir: str | Path | None = None,
        sw_roi_size: Sequence[int] = (128, 128, 32),
        sw_overlap: float = 0.25,
        sw_batch_size: int = 2,
        device: str | torch.device = "cpu",
    ) -> None:
        self.evaluator = evaluator
        self.ckpt_path = Path(str(ckpt_path))
        self.input_path = input_path
        self.output_dir = Path(str(output_dir))
        self.scheduler = checked_scheduler(scheduler)
        self.spacing = None if spacing is None else as_spacing(spacing)
        self.preview = as_flag(preview, "preview")
        self.max_memory_voxels = as_count(max_memory_voxels, "max_memory_voxels")
        self.block_size = as_size(block_size, "block_size")
        self.spill_dir = None if spill_dir is None else str(spill_dir)
        self.predictor_kwargs = {
            "max_whole_voxels": as_count(max_whole_voxels, "max_whole_voxels"),
            "block_size": self.block_size,
            "roi_size": as_size(sw_roi_size, "sw_roi_size"),
            "overlap": float(sw_overlap),
            "sw_batch_size": as_count(sw_batch_size, "sw_batch_size"),
        }
        self.device = device
        self.summaries: list[dict] = []

    def is_large(self, path: Path) -> bool:
        """More voxels than ``max_memory_voxels`` (read from the header)."""
        try:
            return int(np.prod(volume_shape(path))) > self.max_memory_voxels
        except Exception:  # noqa: BLE001 (nibabel, tifffile and zarr raise their own types)
            return False  # unreadable: the stack's own task reports why

    def run(self) -> list[dict]:
        """Segment every input; raise at the end (a table of every stack and what became of it) if any failed."""
        inputs = list_inputs(self.input_path)
        large = [p for p in inputs if self.is_large(p)]
        if self.scheduler is None and not large:
            self.evaluator.run()  # its PredictionWriter logs each stack and raises the failure table
            return []
        check_output_dir(self.output_dir)
        from weakseg_monai.families.loading import load_model

        network = unwrap(load_model(self.ckpt_path, "cpu" if self.scheduler is not None else self.device)).eval()
        outcomes: dict[str, str] = {}
        self.summaries = []
        with dask_client(self.scheduler) as client:
            small = [p for p in inputs if p not in large]
            for path, result in self.run_small(network, small, client):
                self.record(path, result, outcomes, len(inputs))
            for path in large:
                try:
                    result = segment_large_stack(network, path, self.output_dir, self.spacing, self.preview, client,
                                                 self.block_size, self.spill_dir)
                except (OSError, ValueError, RuntimeError, MemoryError) as err:
                    result = err
                self.record(path, result, outcomes, len(inputs))
        failed = len(inputs) - len(self.summaries)
        if failed:
            raise RuntimeError(failure_table(failed, len(inputs), [(str(p), outcomes[str(p)]) for p in inputs]))
        return self.summaries

    def run_small(self, network: InstanceModel, paths: list[Path], client):
        """``(path, summary or exception)`` per stack that fits in memory, as each finishes: in this process one
        after another, on a client one task per stack (the model sent to every worker once)."""
        arguments = (str(self.output_dir), self.spacing, self.preview, self.predictor_kwargs)
        if client is None:
            for path in paths:
                try:
                    yield path, segment_stack(network, str(path), *arguments)
                except (OSError, ValueError, RuntimeError, MemoryError) as err:
                    yield path, err
            return
        if not paths:
            return
        from distributed import as_completed

        model = client.scatter(network, broadcast=True)
        futures = {client.submit(segment_stack, model, str(p), *arguments, pure=False): p for p in paths}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as err:  # noqa: BLE001 (a worker's error of any type fails that stack only)
                yield futures[future], err

    def record(self, path: Path, result, outcomes: dict[str, str], total: int) -> None:
        """Log one finished stack (``[k/n]``) and keep its outcome (``FAILED: ...`` for an exception)."""
        number = f"[{len(outcomes) + 1}/{total}]"
        if isinstance(result, BaseException):
            message, outcomes[str(path)] = failure_outcome(path, str(result))
            logger.error("%s %s", number, message)
            return
        if result.get("warning"):
            logger.warning("%s: %s", path, result["warning"])
        logger.info("%s %s: %d instances in %.1f s -> %s", number, path.name, result["instances"], result["seconds"],
                    result["output"])
        outcomes[str(path)] = f"{result['instances']} instances -> {result['output']}"
        self.summaries.append({k: result[k] for k in ("image", "instances", "seconds")})


__all__ = ["BatchInference", "MAX_MEMORY_VOXELS", "segment_large_stack", "segment_stack"]
