"""Checks of a weak-annotation dataset, shared by ``python -m weakseg_monai validate`` and the loaders.

Every problem names the item, the field and the file, so a bad item fails fast with the same message
whether it is found by the validator or by a training run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from monai.data.box_utils import box_iou
from scipy import ndimage

from weakseg_monai.conventions import as_spacing
from weakseg_monai.data.datalist import SECTIONS, datalist_path, item_id, read_datalist, resolve_paths
from weakseg_monai.data.io import read_volume
from weakseg_monai.data.schema import structure_errors


class DatasetError(ValueError):
    """A dataset item breaks the data format; the message lists every problem found."""


@dataclass(frozen=True)
class Problem:
    level: str  # "error" or "warning"
    where: str  # e.g. "training[3] (id=train_003)"
    field: str
    message: str
    file: str | None = None

    def __str__(self) -> str:
        file = f" [{self.file}]" if self.file else ""
        return f"{self.where} field '{self.field}'{file}: {self.message}"


@dataclass
class ValidationReport:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    n_items: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, problems: list[Problem]) -> None:
        for p in problems:
            (self.errors if p.level == "error" else self.warnings).append(p)

    def format(self) -> str:
        lines = [f"{self.n_items} items checked: {len(self.errors)} errors, {len(self.warnings)} warnings"]
        lines += [f"ERROR   {p}" for p in self.errors]
        lines += [f"WARNING {p}" for p in self.warnings]
        return "\n".join(lines)


def _read(path: str, where: str, name: str, problems: list[Problem]) -> np.ndarray | None:
    """Read a volume, turning every failure into an error Problem."""
    try:
        array = read_volume(path)
    except (OSError, ValueError, RuntimeError) as err:
        problems.append(Problem("error", where, name, f"missing or unreadable: {err}", path))
        return None
    if array.ndim != 3:
        problems.append(Problem("error", where, name, f"must be a 3D (x, y, z) volume, got shape {array.shape}", path))
        return None
    return array


def _check_label_volume(
    volume: np.ndarray, image_shape: tuple, where: str, name: str, path: str, problems: list[Problem]
) -> bool:
    if volume.shape != image_shape:
        problems.append(
            Problem("error", where, name, f"shape {volume.shape} differs from the image {image_shape}", path)
        )
        return False
    if volume.dtype.kind == "f" and not np.array_equal(volume, np.round(volume)):
        problems.append(Problem("error", where, name, "instance labels must be integers", path))
        return False
    if volume.min() < 0:
        problems.append(Problem("error", where, name, "instance labels must be >= 0", path))
        return False
    return True


def _check_boxes(boxes: object, shape: tuple | None, where: str, problems: list[Problem]) -> np.ndarray | None:
    if not isinstance(boxes, list) or any(not isinstance(b, (list, tuple)) or len(b) != 6 for b in boxes):
        problems.append(
            Problem("error", where, "box", "must be a list of boxes of exactly 6 numbers [x0, y0, z0, x1, y1, z1]")
        )
        return None
    try:
        arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    except (TypeError, ValueError):
        problems.append(Problem("error", where, "box", "box coordinates must be numbers"))
        return None
    for i, b in enumerate(arr):
        if not np.isfinite(b).all():
            problems.append(Problem("error", where, "box", f"box {i} {b.tolist()} has NaN or inf"))
        elif (b[3:] <= b[:3]).any():
            problems.append(Problem("error", where, "box", f"box {i} {b.tolist()} has a non-positive size"))
        elif shape is not None and ((b[:3] < 0).any() or (b[3:] > np.asarray(shape)).any()):
            problems.append(
                Problem("error", where, "box", f"box {i} {b.tolist()} lies outside the image [0, {list(shape)})")
            )
    return arr


def _check_mask(
    mask: np.ndarray, boxes: np.ndarray, annotated: np.ndarray, where: str, path: str, problems: list[Problem]
) -> None:
    n = len(boxes)
    values = mask.astype(np.int64)
    top = int(values.max()) if values.size else 0
    if top > n:
        problems.append(Problem("error", where, "mask", f"value {top} has no box (only {n} boxes)", path))
        return
    slices = ndimage.find_objects(values, max_label=n)
    for k in range(n):
        sl = slices[k]
        if annotated[k] and sl is None:
            problems.append(
                Problem(
                    "error", where, "mask_annotated", f"instance {k} is flagged but has no voxels (value {k + 1})", path
                )
            )
        elif not annotated[k] and sl is not None:
            problems.append(
                Problem("error", where, "mask", f"value {k + 1} has voxels but mask_annotated[{k}] is false", path)
            )
        elif sl is not None:
            lo = np.array([s.start for s in sl])
            hi = np.array([s.stop for s in sl])
            b = boxes[k]
            if (lo < np.floor(b[:3])).any() or (hi > np.ceil(b[3:])).any():
                problems.append(
                    Problem(
                        "error",
                        where,
                        "mask",
                        f"instance {k} has voxels in [{lo.tolist()}, {hi.tolist()}) outside its box {b.tolist()}",
                        path,
                    )
                )


NUM_CLASSES = 1  # object classes the model has (dataset labels 0 .. NUM_CLASSES - 1)
DUPLICATE_IOU = 0.95  # two boxes of one item this similar are taken as one object annotated twice


def duplicate_boxes(boxes: np.ndarray) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of ``(G, 6)`` boxes with IoU >= ``DUPLICATE_IOU``."""
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 6))
    iou = torch.triu(box_iou(b, b), diagonal=1)
    return [(int(i), int(j)) for i, j in torch.nonzero(iou >= DUPLICATE_IOU).tolist()]


def check_item(item: dict, where: str = "item", read_volumes: bool = True) -> list[Problem]:
    """All problems of one item whose paths are already absolute (see ``resolve_paths``)."""
    structure = structure_errors(item)
    if structure:  # values are checked only on a well-formed item
        return [Problem("error", where, name, message) for name, message in structure]
    problems: list[Problem] = []
    if "box" not in item:
        problems.append(Problem("error", where, "box", "missing (one box per instance is required)"))
    if "spacing" in item:
        try:
            as_spacing(item["spacing"])
        except (TypeError, ValueError) as err:
            problems.append(Problem("error", where, "spacing", str(err)))

    image = _read(item["image"], where, "image", problems) if read_volumes else None
    shape = tuple(image.shape) if image is not None else None
    if image is not None and image.dtype.kind == "f" and not np.isfinite(image).all():
        problems.append(Problem("error", where, "image", "contains NaN or inf intensities", item["image"]))

    boxes = _check_boxes(item.get("box", []), shape, where, problems)
    n = None if boxes is None else len(boxes)
    if n is not None and n == 0:
        problems.append(Problem("warning", where, "box", "no instances in this item"))

    labels = item.get("label")
    if labels is None:
        problems.append(Problem("warning", where, "label", "missing; every box is taken as class 0"))
    elif n is not None and len(labels) != n:
        problems.append(Problem("error", where, "label", f"{len(labels)} labels for {n} boxes"))
    elif any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in labels):
        problems.append(Problem("error", where, "label", "labels must be integers >= 0"))
    elif labels and max(labels) >= NUM_CLASSES:
        problems.append(
            Problem(
                "error",
                where,
                "label",
                f"label {max(labels)} implies {max(labels) + 1} object classes, but the model has {NUM_CLASSES} "
                f"(label 0 for every box): set the labels to 0 (one class of nuclei / cells)",
            )
        )
    if boxes is not None and len(boxes) > 1:
        twins = duplicate_boxes(boxes)
        if twins:
            listed = ", ".join(f"{a} and {b}" for a, b in twins[:5]) + (" ..." if len(twins) > 5 else "")
            problems.append(
                Problem(
                    "warning",
                    where,
                    "box",
                    f"{len(twins)} pair(s) of boxes with IoU >= {DUPLICATE_IOU} (boxes {listed}): the same object "
                    "annotated twice? Duplicates are left out of the training plan's statistics",
                )
            )

    flags = item.get("mask_annotated")
    annotated = None
    if flags is None:
        if item.get("mask"):
            problems.append(Problem("error", where, "mask_annotated", "missing while a mask is given"))
    elif n is not None and len(flags) != n:
        problems.append(Problem("error", where, "mask_annotated", f"{len(flags)} flags for {n} boxes"))
    elif any(not isinstance(v, bool) for v in flags):
        problems.append(Problem("error", where, "mask_annotated", "flags must be true / false"))
    else:
        annotated = np.asarray(flags, dtype=bool)
        if annotated.any() and not item.get("mask"):
            problems.append(Problem("error", where, "mask", "mask_annotated has true flags but no mask file is given"))

    if image is None:
        return problems
    if item.get("mask"):
        mask = _read(item["mask"], where, "mask", problems)
        if mask is not None and _check_label_volume(mask, shape, where, "mask", item["mask"], problems):
            if boxes is not None and annotated is not None and not any(p.field == "box" for p in problems):
                _check_mask(mask, boxes, annotated, where, item["mask"], problems)
    if item.get("gt_instances"):
        gt = _read(item["gt_instances"], where, "gt_instances", problems)
        if gt is not None and _check_label_volume(gt, shape, where, "gt_instances", item["gt_instances"], problems):
            if n is not None and int(gt.max()) > n:
                problems.append(
                    Problem(
                        "error",
                        where,
                        "gt_instances",
                        f"value {int(gt.max())} has no box ({n} boxes)",
                        item["gt_instances"],
                    )
                )
    return problems


def validate_dataset(dataset: str | Path, read_volumes: bool = True) -> ValidationReport:
    """Check every item of every section of a dataset folder (or datalist file)."""
    report = ValidationReport()
    path = datalist_path(dataset)
    try:
        data = read_datalist(dataset)
    except (OSError, ValueError) as err:
        report.add([Problem("error", "datalist", "datalist", str(err), str(path))])
        return report
    base = path.parent
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        report.add([Problem("warning", "datalist", ",".join(unknown), "unknown sections are ignored", str(path))])
    if not data.get("training"):
        report.add([Problem("warning", "datalist", "training", "no training items", str(path))])
    ids: Counter = Counter()
    n_annotated = 0
    for section in SECTIONS:
        items = data.get(section, [])
        if not isinstance(items, list):
            report.add([Problem("error", section, section, "must be a list of items", str(path))])
            continue
        for i, raw in enumerate(items):
            where = f"{section}[{i}]" + (f" (id={item_id(raw, i)})" if isinstance(raw, dict) else "")
            structure = structure_errors(raw)
            if structure:
                report.add([Problem("error", where, name, message, str(path)) for name, message in structure])
                report.n_items += 1
                continue
            ids[item_id(raw, i)] += 1
            report.add(check_item(resolve_paths(raw, base), where, read_volumes))
            report.n_items += 1
            if section == "training" and isinstance(raw.get("mask_annotated"), list):
                n_annotated += sum(bool(v) for v in raw["mask_annotated"])
            if "spacing" not in raw and not str(raw.get("image", "")).lower().endswith((".nii", ".nii.gz")):
                report.add([Problem("warning", where, "spacing", "not given; read from TIFF metadata or 1 µm assumed")])
    for name, count in ids.items():
        if count > 1:
            report.add([Problem("error", "datalist", "id", f"id {name!r} is used by {count} items", str(path))])
    if data.get("training") and n_annotated == 0:
        report.add(
            [Problem("warning", "training", "mask_annotated", "zero annotated masks: the mask head cannot learn")]
        )
    return report


def _is_missing_training(problem: Problem) -> bool:
    return problem.where == "datalist" and problem.field == "training"


def raise_for_problems(problems: list[Problem]) -> None:
    """Raise ``DatasetError`` listing every error (warnings are not raised)."""
    errors = [p for p in problems if p.level == "error"]
    if errors:
        raise DatasetError("invalid dataset item:\n  " + "\n  ".join(str(p) for p in errors))


def check_dataset(dataset: str | Path, read_volumes: bool = True, require_training: bool = False) -> ValidationReport:
    """Validate a dataset and raise ``DatasetError`` on any error; log the summary and warnings.

    ``require_training``: no ``training`` items is an error (what a training run needs), not a warning.
    """
    import logging

    report = validate_dataset(dataset, read_volumes)
    if require_training:
        for p in [w for w in report.warnings if _is_missing_training(w)]:
            report.warnings.remove(p)
            report.errors.append(replace(p, level="error", message=p.message + " (a training run needs some)"))
    log = logging.getLogger(__name__)
    for p in report.warnings:
        log.warning("%s", p)
    if not report.ok:
        raise DatasetError(f"dataset {dataset} is invalid:\n" + report.format())
    log.info("dataset %s: %d items, no errors, %d warnings", dataset, report.n_items, len(report.warnings))
    return report
