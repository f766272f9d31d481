"""Membrane stretch case: which stage limits our Det F1, and where the ceiling of a seeded watershed lies.

For a dataset folder with a ``test`` section (``gt_instances``) and a checkpoint trained on it (the default
command, as ``scripts/generalisation.py`` runs it), every test volume is taken to the model's working grid
(``WeakSegPredictor.preprocess``, the model's own input rule) and segmented several ways, side by side (a model
of any family, ``weakseg_monai.load_model``):

====================  ==========================================================================================
row                   instances
====================  ==========================================================================================
ours                  the default inference output (its family's: detector + mask head, or wall map + watershed)
ours seeds + ws       one seed per detected box (the wall-distance maximum in its central half), watershed of
                      the smoothed image (walls are ridges)
classical + ours      the classical seeds below plus ours for the cells no detected box covers
classical             no training: seeds are maxima of the distance to the walls (walls = a difference of
                      Gaussians above its Otsu threshold), watershed of the smoothed image
oracle seeds          one seed per ground-truth cell (its deepest interior voxel): the ceiling of any seeded
                      watershed of this image at the working grid, i.e. what perfect detection would give there
oracle seeds,         (a ``boundary`` model only) the same seeds flooding the model's wall probability instead of
learned map           the image: how much cleaner the learned wall map is than the image
oracle seeds, native  the same at the input's own voxel grid (no resampling)
====================  ==========================================================================================

The two ``ours seeds`` rows and the box recall need a detector: they are printed for a ``nuclei`` model only.

It also prints the recall of the detector's boxes (IoU > 0.4, before any mask) split by object thickness: cells
thinner than ``--sliver-um`` in some axis are the slivers the volume faces cut off.

The classical parameters (wall scale 0.3 µm, background 2 µm, peaks >= 1.5 µm apart) are hand-set for this
diagnostic, not planned: the script measures where the limits are; it is not a segmentation method we ship.

    python scripts/membrane_ceiling.py --dataset runs/generalisation/membrane/data \\
        --ckpt runs/generalisation/membrane/ours/train/models/model.pt

``--write-wide OUT [--shape 320,320,96]`` instead writes the suite's membrane dataset (same generator model,
voxel size, counts and seed) with a wider field of view, to train on with the default command. ~1 min per
test volume at 160 x 160 x 64; writing the wide dataset takes ~4 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from monai.data.box_utils import box_iou
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from weakseg_monai import load_model  # noqa: E402
from weakseg_monai.data.datalist import load_section  # noqa: E402
from weakseg_monai.data.instances import boxes_from_instances  # noqa: E402
from weakseg_monai.data.io import read_volume, resolve_spacing  # noqa: E402
from weakseg_monai.data.synthetic import SUITE, write_synthetic_dataset  # noqa: E402
from weakseg_monai.inference.predictor import WeakSegPredictor  # noqa: E402
from weakseg_monai.metrics.scoring import score_pair  # noqa: E402
from weakseg_monai.transforms.dictionary import resample_volume  # noqa: E402

ROWS = (
    "ours",
    "ours seeds + ws",
    "classical + ours",
    "classical",
    "oracle seeds",
    "oracle seeds, learned map",
    "oracle seeds, native",
)
WALL_UM, BACKGROUND_UM, PEAK_DISTANCE_UM, MIN_DEPTH_UM = 0.3, 2.0, 1.5, 0.5


def wall_distance(image: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` distance (µm) to the nearest wall voxel, smoothed; walls = DoG above its Otsu threshold."""
    dog = ndimage.gaussian_filter(image, WALL_UM / spacing) - ndimage.gaussian_filter(image, BACKGROUND_UM / spacing)
    walls = dog > threshold_otsu(dog)
    distance = ndimage.distance_transform_edt(~walls, sampling=spacing)
    return ndimage.gaussian_filter(distance, 0.5 / spacing)


def classical_seeds(image: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classical row's ``(P, 3)`` seeds (maxima of the wall distance, at least ``PEAK_DISTANCE_UM`` apart and
    ``MIN_DEPTH_UM`` deep) and the wall distance itself, for an ``(X, Y, Z)`` image at ``spacing`` µm."""
    depth = wall_distance(image, spacing)
    peaks = peak_local_max(
        depth, min_distance=max(1, int(PEAK_DISTANCE_UM / spacing[0])), threshold_abs=MIN_DEPTH_UM, exclude_border=False
    )
    return peaks, depth


def classical_instances(image: np.ndarray, spacing) -> np.ndarray:
    """The classical row, no training: ``classical_seeds`` flooding the lightly smoothed image (walls are ridges)."""
    image = np.asarray(image, dtype=np.float32)
    peaks, _ = classical_seeds(image, np.asarray(spacing, dtype=np.float64))
    return seeded_watershed(ndimage.gaussian_filter(image, 0.5), peaks)


def box_seeds(boxes: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """``(K, 3)`` voxel of greatest wall distance inside the central half of each ``(K, 6)`` box."""
    shape = np.asarray(depth.shape)
    seeds = []
    for box in boxes:
        quarter = 0.25 * (box[3:] - box[:3])
        hi = np.clip(np.ceil(box[3:] - quarter).astype(int), 1, shape)
        lo = np.clip(np.floor(box[:3] + quarter).astype(int), 0, hi - 1)
        region = depth[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        seeds.append(lo + np.asarray(np.unravel_index(np.argmax(region), region.shape)))
    return np.asarray(seeds, dtype=int).reshape(-1, 3)


def oracle_seeds(gt: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """One seed per ground-truth cell of ``gt`` (working grid): its voxel farthest from the cell's surface."""
    seeds = []
    for index, region in enumerate(ndimage.find_objects(gt), start=1):
        if region is None:
            continue
        inside = np.pad(gt[region] == index, 1)
        depth = ndimage.distance_transform_edt(inside, sampling=spacing)[1:-1, 1:-1, 1:-1]
        seeds.append([s.start + int(p) for s, p in zip(region, np.unravel_index(np.argmax(depth), depth.shape))])
    return np.asarray(seeds, dtype=int).reshape(-1, 3)


def seeded_watershed(elevation: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    markers = np.zeros(elevation.shape, np.int32)
    markers[tuple(seeds.T)] = np.arange(1, len(seeds) + 1)
    return watershed(elevation, markers)


def uncovered(points: np.ndarray, boxes: np.ndarray, margin: float = 0.15) -> np.ndarray:
    """``(P,)`` bool: points outside every box shrunk by ``margin`` of its size per side."""
    keep = np.ones(len(points), bool)
    for box in boxes:
        size = box[3:] - box[:3]
        keep &= ~((points + 0.5 >= box[:3] + margin * size) & (points + 0.5 < box[3:] - margin * size)).all(1)
    return keep


def evaluate_volume(predictor: WeakSegPredictor, item: dict, sliver_um: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """Det / Seg F1 of every row of the model's family on one test item; for a ``nuclei`` model also ``(n, 2)``
    (is_sliver, found) per ground-truth cell and ``(k,)`` whether each detected box matches a cell (IoU > 0.4)."""
    network = predictor.network
    spacing = np.asarray(resolve_spacing(item["image"], item.get("spacing")), dtype=np.float64)
    image = torch.as_tensor(read_volume(item["image"]), dtype=torch.float32)[None]
    gt = read_volume(item["gt_instances"]).astype(np.int32)
    x, grid = predictor.preprocess(image, spacing)
    working = np.asarray(network.working_spacing.tolist(), dtype=np.float64)
    with torch.inference_mode():
        batch, padded = predictor.pad(x)
        dense = predictor.dense(batch)
    array = x[0].numpy()
    peaks, depth = classical_seeds(array, working)
    elevation = ndimage.gaussian_filter(array, 0.5)
    gt_working = resample_volume(torch.from_numpy(gt)[None], array.shape, labels=True)[0].numpy()
    seeds = {"classical": peaks, "oracle seeds": oracle_seeds(gt_working, working)}
    elevations = dict.fromkeys(seeds, elevation)
    boxes = np.zeros((0, 6))
    if network.family == "nuclei":
        boxes = network.select_boxes(dense, padded)[0][0].cpu().numpy()
        ours = box_seeds(boxes, depth)
        seeds["ours seeds + ws"] = ours
        seeds["classical + ours"] = np.concatenate([peaks, ours[[uncovered(peaks, box[None]).all() for box in boxes]]])
        elevations.update(dict.fromkeys(("ours seeds + ws", "classical + ours"), elevation))
    else:  # a wall map: perfect seeds flooding the learned map instead of the image
        crop = tuple(slice(0, s) for s in array.shape)
        seeds["oracle seeds, learned map"] = seeds["oracle seeds"]
        elevations["oracle seeds, learned map"] = torch.softmax(dense[0].float(), 0)[(2, *crop)].cpu().numpy()
    labels = {"ours": predictor.predict_prepared(x, grid)["instances"]}
    for name, points in seeds.items():
        lab = seeded_watershed(elevations[name], points)
        labels[name] = resample_volume(torch.from_numpy(lab)[None], gt.shape, labels=True)[0].numpy()
    native = ndimage.gaussian_filter(image[0].numpy(), 0.5 * working / spacing)
    labels["oracle seeds, native"] = seeded_watershed(native, oracle_seeds(gt, spacing))
    scores = {name: score_pair(gt, lab) for name, lab in labels.items()}

    gt_boxes = boxes_from_instances(gt)
    found_boxes = boxes / np.tile(np.asarray(grid["zoom"]), 2)
    iou = box_iou(torch.as_tensor(gt_boxes).float(), torch.as_tensor(found_boxes).float()).numpy()
    found = iou.max(axis=1) > 0.4 if iou.shape[1] else np.zeros(len(gt_boxes), bool)
    correct = iou.max(axis=0) > 0.4 if iou.shape[0] else np.zeros(len(found_boxes), bool)
    sliver = ((gt_boxes[:, 3:] - gt_boxes[:, :3]) * spacing).min(axis=1) < sliver_um
    return scores, np.stack([sliver, found], axis=1), correct


def write_wide(out: Path, shape: tuple[int, int, int], seed: int) -> None:
    """The suite's membrane dataset with another field of view (seed count cap scaled with the volume); at the
    default shape exactly the suite's ``membrane`` preset (``write_suite_dataset``)."""
    spec = SUITE["membrane"]
    scale = float(np.prod(shape)) / float(np.prod(spec.shape))
    cap = int(np.ceil(spec.model.n_cells[1] * max(1.0, scale)))
    model = dataclasses.replace(spec.model, n_cells=(cap, cap))
    path = write_synthetic_dataset(out, spec.n_train, 0, spec.n_test, 0.2, seed, shape, spec.spacing, model=model)
    print(f"wrote {path}: {spec.n_train} training and {spec.n_test} test volumes of {shape} voxels")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help="dataset folder whose 'test' section is scored")
    parser.add_argument("--ckpt", type=Path, help="model.pt trained on that dataset")
    parser.add_argument("--sliver-um", type=float, default=4.0, help="cells thinner than this count as slivers")
    parser.add_argument("--write-wide", type=Path, help="write the wider membrane dataset here and stop")
    parser.add_argument("--shape", default="320,320,96", help="(x, y, z) voxels of --write-wide volumes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.write_wide:
        write_wide(args.write_wide, tuple(int(v) for v in args.shape.split(",")), args.seed)
        return
    if not (args.dataset and args.ckpt):
        parser.error("--dataset and --ckpt are required (or --write-wide)")
    network = load_model(args.ckpt)
    predictor = WeakSegPredictor(network)
    rows, cells, correct = {}, [], []
    for item in load_section(args.dataset, "test"):
        scores, found, hits = evaluate_volume(predictor, item, args.sliver_um)
        correct.append(hits)
        for name in [n for n in ROWS if n in scores]:
            rows.setdefault(name, []).append((scores[name]["det_f1"], scores[name]["seg_f1"]))
        cells.append(found)
        print(f"{Path(item['image']).name}: " + ", ".join(f"{n} {scores[n]['det_f1']:.3f}" for n in rows))
    cells = np.concatenate(cells)
    print(f"\n{args.dataset} ({len(rows['ours'])} test volumes), model {args.ckpt}\n")
    print("| instances | Det F1 | Seg F1 |\n|---|---|---|")
    for name in rows:
        det, seg = np.mean(rows[name], axis=0)
        print(f"| {name} | {det:.3f} | {seg:.3f} |")
    if network.family != "nuclei":
        return
    sliver = cells[:, 0].astype(bool)
    recall = [cells[mask, 1].mean() if mask.any() else float("nan") for mask in (sliver, ~sliver)]
    print(
        f"\ndetector box recall (IoU > 0.4): {recall[0]:.2f} of {sliver.sum()} slivers (< {args.sliver_um} µm thick), "
        f"{recall[1]:.2f} of {(~sliver).sum()} other cells; precision {np.concatenate(correct).mean():.2f}"
    )


if __name__ == "__main__":
    main()
