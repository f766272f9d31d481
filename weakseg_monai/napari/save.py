"""Save as weak dataset: the annotated items of a viewer as images, masks and ``datalist.json`` in our format.

An item is an image layer of the plugin with a boxes layer of the same id (and maybe a mask and a
``gt_instances`` layer). Items keep the paths their datalist gave them (else ``images/ID.nii.gz``,
``masks/ID_mask.nii.gz``), so saving a loaded dataset again writes the same datalist. Items of the datalist already in
the folder that the viewer does not hold are kept as they are.

Saving into a folder (the opened dataset included) writes every file to a temporary name beside its target first
and then moves each into place with ``os.replace`` (atomic per file), ``datalist.json`` last: an interrupted save
leaves the old datalist, and never a half-written file. An image whose target is its own source is not rewritten.
Our validator then checks the folder, and its messages go to napari's notifications.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from weakseg_monai.data.datalist import DATALIST_NAME, SECTIONS, dumps_json, item_id, read_datalist
from weakseg_monai.data.io import NIFTI_SUFFIXES, TIFF_SUFFIXES, write_volume
from weakseg_monai.data.validate import ValidationReport, validate_dataset
from weakseg_monai.napari.axes import from_display
from weakseg_monai.napari.boxes import WeakBoxes
from weakseg_monai.napari.layers import item_layers, layer_spacing, role_of, weak_meta

DEFAULT_SUFFIX = ".nii.gz"
MAX_NOTIFIED = 20  # messages shown one by one; the rest are counted


def _suffix(path: str | Path | None) -> str:
    name = str(path or "").lower()
    # files only: a dataset saved from napari is NIfTI or TIFF (an OME-Zarr image's annotation is saved as NIfTI)
    return next((s for s in (*NIFTI_SUFFIXES, *TIFF_SUFFIXES) if name.endswith(s)), DEFAULT_SUFFIX)


def _inside(relpath: str | None) -> bool:
    """A datalist path that stays inside its folder (reused as it is when saving elsewhere)."""
    return bool(relpath) and not Path(relpath).is_absolute() and ".." not in Path(relpath).parts


def _target(meta: dict, default: str) -> str:
    return meta["relpath"] if _inside(meta.get("relpath")) else default


class StagedFiles:
    """Files written under temporary names beside their targets, moved into place together by ``commit``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.moves: list[tuple[Path, Path]] = []

    def temporary(self, relpath: str) -> Path:
        target = self.folder / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".tmp_{os.getpid()}_{target.name}")
        self.moves.append((temporary, target))
        return temporary

    def volume(self, relpath: str, array: np.ndarray, spacing: tuple, affine: Any = None) -> None:
        affine = None if affine is None or not _suffix(relpath).startswith(".nii") else np.asarray(affine)
        write_volume(self.temporary(relpath), array, spacing, affine=affine)

    def copy(self, relpath: str, source: Path) -> None:
        if (self.folder / relpath).resolve() != source.resolve():
            shutil.copyfile(source, self.temporary(relpath))

    def text(self, relpath: str, text: str) -> None:
        self.temporary(relpath).write_text(text)

    def commit(self) -> None:
        for temporary, target in self.moves:
            os.replace(temporary, target)
        self.moves = []

    def discard(self) -> None:
        for temporary, _ in self.moves:
            temporary.unlink(missing_ok=True)
        self.moves = []


def annotated_items(layers: Any) -> list[dict[str, Any]]:
    """The items a viewer holds: ``{role: layer}`` for each image layer with a boxes layer of its id."""
    items = []
    for layer in layers:
        if role_of(layer) == "image":
            found = item_layers(layers, weak_meta(layer)["id"])
            if "boxes" in found:
                items.append(found)
    return items


def stage_item(found: dict[str, Any], staged: StagedFiles) -> tuple[str, dict]:
    """Stage one item's files; returns its section and datalist entry."""
    image, boxes = found["image"], found["boxes"]
    meta = weak_meta(image)
    name = str(meta["id"])
    spacing = layer_spacing(image)
    affine = meta.get("affine")
    source = Path(meta["source"]) if meta.get("source") else None
    image_rel = _target(meta, f"images/{name}{_suffix(source)}")
    if source is not None and source.is_file():
        staged.copy(image_rel, source)
    else:
        staged.volume(image_rel, np.asarray(from_display(image.data)), spacing, affine)
    weak: WeakBoxes = weak_meta(boxes)["boxes"]
    fields = weak.item_fields()
    item: dict[str, Any] = {"id": name, "image": image_rel, "box": fields["box"], "label": fields["label"]}
    mask = found.get("mask")
    if mask is not None and (weak_meta(mask).get("source") or np.any(mask.data)):
        item["mask"] = _target(weak_meta(mask), f"masks/{name}_mask{_suffix(image_rel)}")
        staged.volume(item["mask"], np.asarray(from_display(mask.data)), spacing, affine)
    item["mask_annotated"] = fields["mask_annotated"]
    item["spacing"] = list(spacing)
    gt = found.get("gt_instances")
    if gt is not None:
        gt_meta = weak_meta(gt)
        gt_rel = _target(gt_meta, f"labels/{name}_gt{_suffix(image_rel)}")
        gt_source = Path(gt_meta["source"]) if gt_meta.get("source") else None
        if gt_source is not None and gt_source.is_file():
            staged.copy(gt_rel, gt_source)
        else:
            staged.volume(gt_rel, np.asarray(from_display(gt.data)), spacing, affine)
        item["gt_instances"] = gt_rel
    item.update(meta.get("extra") or {})
    return str(meta.get("section") or "training"), item


def save_weak_dataset(layers: Any, folder: str | Path) -> tuple[Path, ValidationReport]:
    """Write the viewer's annotated items to ``folder`` as a weak dataset (atomically per file, the datalist last),
    then validate it. Returns the datalist path and the validator's report."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = annotated_items(layers)
    if not items:
        raise ValueError("nothing to save: no image layer has a boxes layer (open a dataset, or start annotating)")
    old = read_datalist(folder) if (folder / DATALIST_NAME).is_file() else {}
    staged = StagedFiles(folder)
    try:
        new: dict[str, dict] = {}
        placed: dict[str, str] = {}
        for found in items:
            section, item = stage_item(found, staged)
            new[item["id"]] = item
            placed[item["id"]] = section
        sections: dict[str, list[dict]] = {s: [] for s in SECTIONS}
        for section in SECTIONS:  # the datalist's own order and sections, its items replaced by the viewer's
            for index, raw in enumerate(old.get(section) or []):
                key = item_id(raw, index)
                sections[section].append(new.pop(key) if key in new else raw)
        for key, item in new.items():
            sections[placed[key]].append(item)
        staged.text(DATALIST_NAME, dumps_json(sections) + "\n")
        staged.commit()
    finally:
        staged.discard()
    return folder / DATALIST_NAME, validate_dataset(folder)


def notify_report(report: ValidationReport, folder: str | Path) -> None:
    """The validator's messages as napari notifications: each error and warning (up to ``MAX_NOTIFIED``), then a
    summary."""
    from napari.utils.notifications import show_error, show_info, show_warning

    problems = [(show_error, f"ERROR {p}") for p in report.errors] + [(show_warning, f"WARNING {p}")
                                                                      for p in report.warnings]
    for show, message in problems[:MAX_NOTIFIED]:
        show(message)
    more = f" ({len(problems) - MAX_NOTIFIED} more: python -m weakseg_monai validate {folder})" if len(
        problems) > MAX_NOTIFIED else ""
    summary = f"saved {folder}: {report.n_items} items, {len(report.errors)} errors, {len(report.warnings)} warnings"
    (show_info if report.ok else show_error)(summary + more)
