"""Scale-out benchmark (issue 26): the shipped model on an HL60-like stack larger than one process should hold,
segmented blockwise on dask from OME-Zarr, in this process (``scheduler: null``) and on ``local:2``.

Steps (each cached in ``--work``; ``--only`` picks some):

- ``generate``: the stack (default 2048 x 2048 x 128 voxels at 0.5 x 0.5 x 1.0 µm) written tile by tile
  (``write_tiled_stack``) into an OME-Zarr image and a plain Zarr of its ground-truth labels, never whole in memory.
- ``null`` / ``local2``: ``segment_volume`` in a fresh process; wall time, voxels/s and the peak RSS (VmHWM) of
  every process: the client (with ``local:2`` also the scheduler and the nannies, which a LocalCluster runs in the
  client's process) and each worker. ``tensorflow`` is kept out of every process: it is no dependency of ours, but
  where it is installed (the dev environment has it for StarDist) MONAI's tensorboard import pulls it in, +0.4 GB.
- ``score``: in a separate process, Det F1 of the label boxes (read chunk by chunk from the output) against the
  ground-truth boxes (box IoU > 0.4, one-to-one, greedy by IoU), matched tile by tile.
- ``ratio``: voxels/s of ``segment_volume`` (in this process) against the in-memory predictor
  (``WeakSegPredictor``, block by block in memory) on a 512 x 512 x 128 part that fits both ways, side by side.

    python scripts/benchmark_scale.py                       # everything, about 40 min on 2 cores
    python scripts/benchmark_scale.py --only ratio score    # reuse the cached runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPACING = (0.5, 0.5, 1.0)
TILE = (256, 256, 128)
STEPS = ("generate", "null", "local2", "score", "ratio")


def vmhwm_gb() -> tuple[int, float]:
    """``(pid, peak resident memory (VmHWM) in GB)`` of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return os.getpid(), int(line.split()[1]) / 1024**2
    return os.getpid(), float("nan")


def generate(work: Path, shape: tuple[int, int, int], seed: int) -> None:
    import dask.array as da
    import zarr

    from weakseg_monai.data.omezarr import write_zarr
    from weakseg_monai.data.synthetic import write_tiled_stack

    zyx = shape[::-1]
    chunks = TILE[::-1]
    plain = zarr.open_array(str(work / "image_s0.zarr"), mode="w", shape=zyx, chunks=chunks, dtype="uint16")
    labels = zarr.open_array(str(work / "gt_labels.zarr"), mode="w", shape=zyx, chunks=chunks, dtype="int32")
    start = time.perf_counter()
    boxes = write_tiled_stack(plain, labels, seed, TILE, SPACING)
    np.save(work / "gt_boxes.npy", boxes)
    write_zarr(work / "stack.ome.zarr", da.from_zarr(plain).transpose(2, 1, 0), SPACING)
    import shutil

    shutil.rmtree(work / "image_s0.zarr")
    print(f"generated {shape} with {len(boxes)} nuclei in {time.perf_counter() - start:.0f} s "
          f"(peak {vmhwm_gb()[1]:.2f} GB)")


def no_tensorflow() -> None:
    """Keep ``tensorflow`` out of this process (imports of it fail; MONAI's optional imports go on without it)."""
    sys.modules.setdefault("tensorflow", None)  # type: ignore[arg-type]


def child(mode: str, work: Path, block: list[int]) -> dict:
    """One run of ``segment_volume`` (this is a fresh process)."""
    import shutil

    no_tensorflow()
    import torch

    from weakseg_monai.data.omezarr import open_zarr
    from weakseg_monai.families.loading import load_model
    from weakseg_monai.inference.distributed import segment_volume

    torch.set_num_threads(os.cpu_count() or 1)
    out = work / f"pred_{mode}.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    network = load_model(REPO / "bundle" / "models" / "model.pt")
    volume, spacing = open_zarr(work / "stack.ome.zarr")
    row: dict = {"mode": mode, "voxels": int(np.prod(volume.shape)), "shape": list(volume.shape), "block": block}
    if mode == "null":
        start = time.perf_counter()
        found = segment_volume(network, volume, spacing, out, scheduler=None, block_size=block)
        row["seconds"] = time.perf_counter() - start
        row["rss_gb"] = {"client (the only process)": vmhwm_gb()[1]}
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                client.run(no_tensorflow)
                start = time.perf_counter()
                found = segment_volume(network, volume, spacing, out, scheduler=client, block_size=block)
                row["seconds"] = time.perf_counter() - start
                workers = list(client.run(vmhwm_gb).values())
                nannies = list(client.run(vmhwm_gb, nanny=True).values())
                pid, peak = vmhwm_gb()
                # a LocalCluster runs its scheduler and its nannies in the client's process
                where = " + nannies" if all(p == pid for p, _ in nannies) else ""
                row["rss_gb"] = {f"client + scheduler{where}": peak}
                row["rss_gb"].update({f"worker {i}": v for i, (_, v) in enumerate(workers)})
                row["rss_gb"].update({f"nanny {i}": v for i, (p, v) in enumerate(nannies) if p != pid})
    row["instances"] = int(len(found["scores"]))
    row["voxels_per_s"] = row["voxels"] / row["seconds"]
    return row


def label_boxes(path: Path) -> np.ndarray:
    """``(N, 6)`` boxes of the labels of an OME-Zarr prediction, read chunk by chunk (x, y, z voxels)."""
    from scipy import ndimage

    from weakseg_monai.data.omezarr import open_labels

    labels = open_labels(path).transpose(2, 1, 0)  # (z, y, x), as stored
    lo: dict[int, np.ndarray] = {}
    hi: dict[int, np.ndarray] = {}
    step = (64, 512, 512)
    for z in range(0, labels.shape[0], step[0]):
        for y in range(0, labels.shape[1], step[1]):
            for x in range(0, labels.shape[2], step[2]):
                block = np.asarray(labels[z:z + step[0], y:y + step[1], x:x + step[2]].compute())
                ids = np.unique(block)[1:]
                if not len(ids):
                    continue
                dense = np.searchsorted(ids, block) + 1
                dense[block == 0] = 0
                for k, found in zip(ids, ndimage.find_objects(dense)):
                    a = np.array([found[2].start + x, found[1].start + y, found[0].start + z])
                    b = np.array([found[2].stop + x, found[1].stop + y, found[0].stop + z])
                    lo[k] = np.minimum(lo.get(k, a), a)
                    hi[k] = np.maximum(hi.get(k, b), b)
    keys = sorted(lo)
    return np.array([np.concatenate([lo[k], hi[k]]) for k in keys], dtype=np.float32).reshape(-1, 6)


def tiled_det_f1(gt: np.ndarray, pred: np.ndarray, tile: int = 256, threshold: float = 0.4) -> dict:
    """Det F1 at box IoU > ``threshold``, one-to-one (greedy by IoU), computing IoUs only within in-plane tiles."""
    import torch
    from monai.data.box_utils import box_iou

    pairs = []
    gx, gy = ((gt[:, 0] + gt[:, 3]) / 2 // tile).astype(int), ((gt[:, 1] + gt[:, 4]) / 2 // tile).astype(int)
    for tx, ty in set(zip(gx.tolist(), gy.tolist())):
        g = np.nonzero((gx == tx) & (gy == ty))[0]
        lo, hi = np.array([tx, ty]) * tile - tile // 4, np.array([tx + 1, ty + 1]) * tile + tile // 4
        p = np.nonzero((pred[:, 3:5] > lo).all(axis=1) & (pred[:, :2] < hi).all(axis=1))[0]
        if not len(p):
            continue
        iou = box_iou(torch.as_tensor(gt[g]).double(), torch.as_tensor(pred[p]).double()).numpy()
        i, j = np.nonzero(iou > threshold)
        pairs.extend(zip(iou[i, j].tolist(), g[i].tolist(), p[j].tolist()))
    used_g, used_p = set(), set()
    for _, a, b in sorted(pairs, reverse=True):
        if a not in used_g and b not in used_p:
            used_g.add(a)
            used_p.add(b)
    tp = len(used_g)
    precision, recall = tp / max(len(pred), 1), tp / max(len(gt), 1)
    return {"f1": 2 * tp / max(len(gt) + len(pred), 1), "precision": precision, "recall": recall, "tp": tp,
            "n_gt": len(gt), "n_pred": len(pred)}


def ratio(work: Path, block: list[int]) -> dict:
    """In-memory predictor vs ``segment_volume`` (in this process) on a 512 x 512 x 128 part, side by side."""
    import shutil

    import torch

    from weakseg_monai.data.omezarr import open_zarr
    from weakseg_monai.families.loading import load_model
    from weakseg_monai.inference.distributed import segment_volume
    from weakseg_monai.inference.predictor import WeakSegPredictor

    network = load_model(REPO / "bundle" / "models" / "model.pt")
    volume, spacing = open_zarr(work / "stack.ome.zarr")
    part = np.asarray(volume[:512, :512, :].compute()).astype(np.float32)
    predictor = WeakSegPredictor(network, block_size=block)
    start = time.perf_counter()
    with torch.inference_mode():
        predictor(torch.from_numpy(part)[None], spacing)
    memory = time.perf_counter() - start
    out = work / "ratio_part.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    segment_volume(network, part, spacing, out, block_size=block)
    dask_seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return {"voxels": int(part.size), "in_memory_s": memory, "dask_s": dask_seconds, "ratio": dask_seconds / memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(REPO / "runs" / "benchmark_scale"))
    parser.add_argument("--shape", type=int, nargs=3, default=[2048, 2048, 128],
                        help="x y z voxels, a whole number of 256 x 256 x 128 tiles")
    parser.add_argument("--block", type=int, nargs=3, default=[192, 192, 64], help="block core, working voxels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--child", choices=("null", "local2"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, work, args.block)))
        return
    cache_path = work / "results.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if "generate" in args.only and not (work / "stack.ome.zarr").exists():
        generate(work, tuple(args.shape), args.seed)
    for mode in ("null", "local2"):
        if mode in args.only:
            run = subprocess.run([sys.executable, __file__, "--work", str(work), "--block", *map(str, args.block),
                                  "--child", mode], capture_output=True, text=True)
            lines = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
            if run.returncode or not lines:
                sys.exit(f"{mode} run failed:\n{run.stderr[-3000:]}")
            cache[mode] = json.loads(lines[-1][7:]) | {"date": time.strftime("%Y-%m-%d")}
            cache_path.write_text(json.dumps(cache, indent=2))
    if "score" in args.only:
        gt = np.load(work / "gt_boxes.npy").astype(np.float32)
        for mode in ("null", "local2"):
            if (work / f"pred_{mode}.ome.zarr").exists():
                cache.setdefault(mode, {})["det"] = tiled_det_f1(gt, label_boxes(work / f"pred_{mode}.ome.zarr"))
        cache_path.write_text(json.dumps(cache, indent=2))
    if "ratio" in args.only:
        cache["ratio"] = ratio(work, args.block) | {"date": time.strftime("%Y-%m-%d")}
        cache_path.write_text(json.dumps(cache, indent=2))
    print("| scheduler | voxels | time | voxels/s | instances | Det F1 (P / R) | peak RSS per process, GB | date |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, name in (("null", "null (in this process)"), ("local2", "local:2")):
        row = cache.get(mode)
        if not row or "seconds" not in row:
            continue
        det = row.get("det", {})
        f1 = f"{det['f1']:.3f} ({det['precision']:.3f} / {det['recall']:.3f})" if det else "not scored"
        rss = ", ".join(f"{k} {v:.2f}" for k, v in row["rss_gb"].items())
        print(f"| {name} | {' x '.join(map(str, row['shape']))} | {row['seconds'] / 60:.1f} min | "
              f"{row['voxels_per_s'] / 1e6:.2f} M | {row['instances']} | {f1} | {rss} | {row.get('date', '')} |")
    if "ratio" in cache:
        r = cache["ratio"]
        print(f"\nsegment_volume / in-memory predictor on {r['voxels'] / 1e6:.0f} M voxels, side by side: "
              f"{r['dask_s']:.1f} s / {r['in_memory_s']:.1f} s = {r['ratio']:.2f}")


if __name__ == "__main__":
    main()
