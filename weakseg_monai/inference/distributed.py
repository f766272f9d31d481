"""Blockwise inference on dask, for volumes larger than memory: the blockwise core (``inference.blockwise``) run as
dask tasks, in two phases, with the labels written to OME-Zarr chunk by chunk.

1. **Detect**: one task per block (``plan_blocks``: cores of ``block_size`` working voxels, halo from the family)
   reads only its region of the lazy volume, mirrors the volume's faces it touches and runs ``predict_block``: the
   objects centred in its core, with global boxes, mask frames, scores and ``uint8`` mask grids. The grids go to a
   spill folder (one ``.npz`` per block), so neither the client nor a worker holds all masks.
2. **Resolve and write**: on the client, a global NMS over all boxes (the rare double at a core border; objects
   are small records) gives every kept instance a global id (1, 2, ... by decreasing score). Then one task per
   output chunk pastes the kept masks whose frames overlap that chunk (higher score wins, as in one volume) and
   returns it; ``ome-zarr`` writes each chunk once, so no two tasks write the same Zarr chunk.

Why not ``dask.array.map_overlap(..., trim=True)``: an object crossing a core border comes back cut in two
(centre-in-core ownership with whole-object masks is what keeps it whole). Peak memory per task is one block's
region and its network activations, or one chunk and the mask grids overlapping it: bounded by the block size, not
the volume. Intensity percentiles are computed once, exactly for volumes up to ``EXACT_PERCENTILE_VOXELS`` and from
a sample of blocks above.

``scheduler``: ``None`` runs the tasks in this process (dask's threads); ``"local:N"`` on a
``distributed.LocalCluster`` of N single-threaded worker processes; ``"tcp://host:port"`` on an existing cluster
(``dask scheduler`` / ``dask worker``, dask-jobqueue, dask-kubernetes).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from weakseg_monai.conventions import as_spacing
from weakseg_monai.inference.blockwise import (
    MASK_LEVELS,
    Block,
    block_face_pads,
    block_geometry,
    network_blocks,
    plan_blocks,
    predict_block,
    ranked_nms,
)
from weakseg_monai.networks.family import InstanceModel
from weakseg_monai.networks.postprocess import paste_masks
from weakseg_monai.transforms.faces import mirror_faces, mirror_margin
from weakseg_monai.transforms.input_rule import InputRule

logger = logging.getLogger(__name__)

EXACT_PERCENTILE_VOXELS = 16_000_000  # up to this many voxels, percentiles over the whole volume
SAMPLE_BLOCKS = 16  # above: over this many evenly spread blocks
SAMPLE_VOXELS = 500_000  # of each of which at most about this many voxels (a regular sub-grid)


def intensity_range(volume, rule: InputRule, block: Sequence[int]) -> tuple[float, float]:
    """The volume's ``(low, high)`` percentiles of the model's rule: exact up to ``EXACT_PERCENTILE_VOXELS``, else
    from ``SAMPLE_BLOCKS`` blocks of ``block`` voxels spread over it, each on a regular sub-grid of about
    ``SAMPLE_VOXELS`` (``np.percentile`` works on a float64 copy: 16 whole blocks of 192 x 192 x 64 took 0.6 GB)."""
    if int(np.prod(volume.shape)) <= EXACT_PERCENTILE_VOXELS:
        return rule.intensity_range(np.asarray(volume))
    blocks = plan_blocks(volume.shape, block, (0, 0, 0))
    chosen = [blocks[i] for i in np.linspace(0, len(blocks) - 1, min(SAMPLE_BLOCKS, len(blocks))).astype(int)]
    samples = []
    for b in chosen:
        region = np.asarray(volume[b.slices()])
        step = max(1, int(round((region.size / SAMPLE_VOXELS) ** (1 / 3))))
        samples.append(region[::step, ::step, ::step].ravel())
    return rule.intensity_range(np.concatenate(samples))


def release_freed_memory() -> None:
    """Hand the memory a finished block freed back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Why: blocks of different sizes leave glibc's heap fragmented, and without this the resident memory of a process
    grew with the number of blocks it ran (1024 x 1024 x 128 voxels, 192 x 192 x 64 blocks: peak 2.2 GB vs 1.6 GB
    for a quarter of it), not with the block size."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator returns memory its own way
        pass


def detect_block(
    network: InstanceModel, region: np.ndarray, index: int, block: Block, pads, zoom, intensity, spill: str
) -> dict[str, np.ndarray]:
    """Phase 1 for one block: ``region`` (the voxels of ``block.region``; dask reads only those) with the faces it
    touches mirrored (``pads = (grown block, before, after)``, ``block_face_pads``); its objects in global input
    voxels, without their masks, which go to ``spill/block_<index>.npz``."""
    grown, before, after = pads
    found = predict_block(network, mirror_faces(np.asarray(region), before, after), grown, zoom, intensity)
    np.savez(Path(spill) / f"block_{index}.npz", *[m.numpy() for m in found["masks"]])
    del found["masks"]
    release_freed_memory()
    return {
        "boxes": found["boxes"].numpy(),
        "frames": found["frames"].numpy(),
        "scores": found["scores"].numpy(),
        "classes": found["classes"].numpy(),
        "block": np.full(len(found["scores"]), index),
        "item": np.arange(len(found["scores"])),
    }


def resolve(detections: list[dict[str, np.ndarray]], nms_thresh: float) -> dict[str, np.ndarray]:
    """Phase 2 on the client: all blocks' objects after a global NMS, by decreasing score (global id = row + 1)."""
    table = {k: np.concatenate([d[k] for d in detections]) for k in detections[0]}
    keep = ranked_nms(*(torch.as_tensor(table[k]) for k in ("boxes", "scores", "classes")), nms_thresh).numpy()
    return {k: v[keep] for k, v in table.items()}


def paste_chunk(kept: dict[str, np.ndarray], lo: Sequence[int], hi: Sequence[int], spill: str, threshold: float):
    """One output chunk ``[lo, hi)`` (x, y, z) of the label volume, int32, stored (z, y, x): the masks of ``kept``
    (the objects overlapping it, with their global ``ids``)."""
    owner = torch.zeros([b - a for a, b in zip(lo, hi)], dtype=torch.int32)
    if len(kept["ids"]):
        masks, opened = [], {}
        for block, item in zip(kept["block"].tolist(), kept["item"].tolist()):
            if block not in opened:
                opened[block] = np.load(Path(spill) / f"block_{block}.npz")
            masks.append(torch.from_numpy(opened[block][f"arr_{item}"]).float() / MASK_LEVELS)
        for archive in opened.values():
            archive.close()
        shift = torch.tensor(list(lo) * 2, dtype=torch.float32)
        paste_masks(owner, masks, torch.as_tensor(kept["frames"]) - shift, torch.as_tensor(kept["scores"]), threshold,
                    values=kept["ids"].tolist())
    return owner.numpy().transpose(2, 1, 0)


def chunk_tasks(kept: dict[str, np.ndarray], shape_zyx, chunks_zyx, spill: str, threshold: float):
    """The label volume ``(Z, Y, X)`` as a dask array of ``paste_chunk`` tasks, each given only the rows of ``kept``
    whose mask frames overlap its chunk."""
    import dask
    import dask.array as da

    chunks = tuple(min(c, s) for c, s in zip(chunks_zyx, shape_zyx))
    grid = [list(range(0, s, c)) for s, c in zip(shape_zyx, chunks)]
    frames = kept["frames"]
    pieces = np.empty([len(g) for g in grid], dtype=object)
    for index in np.ndindex(*pieces.shape):
        lo = [g[i] for g, i in zip(grid, index)][::-1]  # (x, y, z)
        hi = [min(a + c, s) for a, c, s in zip(lo, chunks[::-1], shape_zyx[::-1])]
        rows = np.nonzero(np.all((frames[:, :3] < np.asarray(hi)) & (frames[:, 3:] > np.asarray(lo)), axis=1))[0]
        subset = {k: v[rows] for k, v in kept.items()} | {"ids": rows + 1}
        task = dask.delayed(paste_chunk)(subset, lo, hi, spill, threshold)
        pieces[index] = da.from_delayed(task, [b - a for a, b in zip(lo, hi)][::-1], dtype=np.int32)
    return da.block(pieces.tolist())


def checked_scheduler(scheduler) -> str | None:
    """``scheduler`` checked: ``None`` (in-process), ``"local:N"`` (N >= 1) or a cluster's address (``tcp://``,
    ``tls://``, ``inproc://``, ``ucx://``) -- one line naming the id and the three forms otherwise. A ``Client`` is
    passed through."""
    if scheduler is None or (isinstance(scheduler, str) and scheduler.strip().lower() in ("", "none", "null")):
        return None
    if not isinstance(scheduler, str):
        return scheduler
    text = scheduler.strip()
    if text.startswith("local:") and text[6:].isdigit() and int(text[6:]) >= 1:
        return text
    if "://" in text and text.split("://", 1)[0] in ("tcp", "tls", "inproc", "ucx", "ws", "wss"):
        return text
    raise ValueError(
        f"scheduler {scheduler!r}: use null (in this process), 'local:N' (a local cluster of N worker processes) or "
        "the address of a running dask scheduler, e.g. 'tcp://10.0.0.5:8786'"
    )


def compute_with_progress(tasks: list, client, label: str) -> list:
    """The results of dask ``tasks``, in order: in this process one after another, on a client as they finish; a
    progress line (``label: k/n``) at about every tenth."""
    import dask

    total, step = len(tasks), max(1, len(tasks) // 10)
    results: list = [None] * total
    if client is None:
        for k, task in enumerate(tasks):
            (results[k],) = dask.compute(task, scheduler="synchronous")
            if (k + 1) % step == 0 or k + 1 == total:
                logger.info("%s %d/%d", label, k + 1, total)
        return results
    from distributed import as_completed

    futures = client.compute(tasks)
    index = {f.key: k for k, f in enumerate(futures)}
    for done, future in enumerate(as_completed(futures), start=1):
        results[index[future.key]] = future.result()
        if done % step == 0 or done == total:
            logger.info("%s %d/%d", label, done, total)
    return results


@contextlib.contextmanager
def dask_client(scheduler):
    """``None``: no client (tasks run in this process); ``local:N``: a LocalCluster of N single-threaded worker
    processes, closed after; an address: a client of that cluster; a ``distributed.Client``: that client, left
    open."""
    scheduler = checked_scheduler(scheduler)
    if scheduler is None:
        yield None
        return
    if not isinstance(scheduler, str):
        yield scheduler
        return
    from distributed import Client, LocalCluster

    text = scheduler
    if text.startswith("local:"):
        workers = int(text.split(":", 1)[1])
        quiet = logging.getLogger("distributed")  # its INFO lines (every connection) would drown the progress lines
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                              silence_logs=logging.WARNING) as cluster:
                with Client(cluster) as client:
                    yield client
        finally:
            quiet.setLevel(level)
    else:
        with Client(text) as client:
            yield client


def segment_volume(
    network: InstanceModel,
    volume,
    spacing: Sequence[float],
    out: str | Path,
    scheduler: str | None = None,
    block_size: Sequence[int] = (192, 192, 64),
    chunks_zyx: Sequence[int] = (32, 256, 256),
    spill_dir: str | Path | None = None,
    name: str = "volume",
) -> dict[str, np.ndarray]:
    """Segment an ``(X, Y, Z)`` volume (a dask, zarr or numpy array; read block by block) at ``spacing`` µm and write
    its labels to the new OME-Zarr ``out`` (``labels/instances``). Returns the kept objects: ``boxes``, ``scores``,
    ``labels`` (dataset labels), ``ids`` (their label values).

    ``spill_dir``: where the blocks' mask grids wait between the phases (a temporary folder inside it, removed at the
    end). On a cluster of several machines the workers read the input, write the spill and the output: the input,
    ``out`` and ``spill_dir`` must then be on a filesystem every worker sees. Default: the system's temporary
    folder. The output is written next to ``out`` and renamed at the end (nothing half-written under its name).
    ``scheduler``: ``None``, ``"local:N"``, an address or a ``distributed.Client`` (``dask_client``); ``name``: what
    the progress lines call the volume."""
    import dask
    import dask.array as da

    from weakseg_monai.data.io import replace_path
    from weakseg_monai.data.omezarr import write_zarr_labels

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists: remove it or choose another output")
    network.eval()
    spacing = as_spacing(spacing)
    rule = InputRule.of(network)
    _, zoom = rule.working_shape(volume.shape, spacing)
    core, _ = block_geometry(network, zoom, block_size)
    blocks = network_blocks(network, volume.shape, zoom, block_size)
    if not isinstance(volume, da.Array):  # numpy or zarr: read region by region as well
        volume = da.from_array(volume, chunks=tuple(min(c, s) for c, s in zip(core, volume.shape)))
    intensity = intensity_range(volume, rule, core)
    margin = [m / z for m, z in zip(mirror_margin(network), zoom)]
    spill = tempfile.mkdtemp(prefix="weakseg_blocks_", dir=spill_dir)
    partial = out.with_name(f".tmp_{out.name}")
    try:
        with dask_client(scheduler) as client:
            where = "in this process" if client is None else f"on {client.scheduler.address}"
            logger.info("%s: %d blocks over %s voxels, %s", name, len(blocks), tuple(volume.shape), where)
            model = dask.delayed(network) if client is None else client.scatter(network, broadcast=True)
            tasks = [
                dask.delayed(detect_block)(
                    model, volume[b.slices()], i, b, block_face_pads(b, volume.shape, margin), zoom, intensity, spill
                )
                for i, b in enumerate(blocks)
            ]
            # in this process one block at a time: torch already uses every core, and memory stays one block's
            run = {"scheduler": "synchronous"} if client is None else {"scheduler": client.get}
            detections = compute_with_progress(tasks, client, f"{name}: blocks")
            kept = resolve(detections, network.merge_nms_threshold())
            labels_zyx = chunk_tasks(kept, tuple(int(s) for s in volume.shape[::-1]), chunks_zyx, spill,
                                     float(network.mask_threshold))
            # each chunk pasted once, into a plain array; the OME-Zarr pyramid is then built from it (ome-zarr
            # reads its input more than once: its label-value pass would paste everything again)
            level0 = str(Path(spill) / "labels_s0.zarr")
            with dask.config.set(**run):
                labels_zyx.to_zarr(level0)
                shutil.rmtree(partial, ignore_errors=True)
                write_zarr_labels(partial, da.from_zarr(level0).transpose(2, 1, 0), spacing)
        replace_path(partial, out)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
    return {
        "boxes": kept["boxes"].astype(np.float32),
        "scores": kept["scores"],
        "labels": kept["classes"] - 1,
        "ids": np.arange(1, len(kept["scores"]) + 1),
    }
