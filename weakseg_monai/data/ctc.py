"""Cell Tracking Challenge layout <-> our weak-annotation datalist.

CTC layout (e.g. Fluo-N3DH-SIM+): ``01/t000.tif`` images, ``01_GT/SEG/man_seg000.tif`` full instance
segmentations, 16-bit TIFF stored (z, y, x). ``from_ctc`` writes a datalist whose images point at the
original TIFFs, with relabelled ground truth (consecutive labels in box order), boxes for all cells and
a seeded, nested fraction of voxel masks. ``to_ctc`` writes predictions as ``XX_RES/maskTTT.tif`` plus a
trivial ``res_track.txt`` (every object its own one-frame track), the layout the official evaluators read.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from weakseg_monai.data.datalist import partial_mask_from_instances, select_annotated, write_datalist
from weakseg_monai.data.instances import boxes_from_instances, relabel_consecutive
from weakseg_monai.data.io import VOLUME_SUFFIXES, read_volume, write_volume

logger = logging.getLogger(__name__)

SIM_PLUS_SPACING = (0.125, 0.125, 0.2)
# Zhao et al. 2018, HL60 (Fluo-N3DH-SIM+): 13 training stacks, 100 test stacks
PAPER_SPLIT: dict[str, list[tuple[str, Iterable[int]]]] = {
    "training": [("01", range(0, 71, 10)), ("02", range(0, 41, 10))],
    "test": [("01", range(80, 150)), ("02", range(50, 80))],
}


def from_ctc(
    root: str | Path,
    out: str | Path,
    mask_fraction: float = 0.2,
    seed: int = 0,
    spacing: Sequence[float] = SIM_PLUS_SPACING,
    split: dict[str, list[tuple[str, Iterable[int]]]] | None = None,
) -> Path:
    """Convert a CTC dataset folder into our datalist (paper's split by default). Returns the datalist path."""
    root, out = Path(root), Path(out)
    split = PAPER_SPLIT if split is None else split
    sections: dict[str, list[dict]] = {}
    missing = []
    for section, sequences in split.items():
        items = []
        for sequence, frames in sequences:
            for t in frames:
                image = root / sequence / f"t{t:03d}.tif"
                gt_path = root / f"{sequence}_GT" / "SEG" / f"man_seg{t:03d}.tif"
                if not image.is_file() or not gt_path.is_file():
                    missing.append(str(image if not image.is_file() else gt_path))
                    continue
                name = f"{sequence}_t{t:03d}"
                gt = relabel_consecutive(read_volume(gt_path).astype(np.int64))
                boxes = boxes_from_instances(gt)
                annotated = select_annotated(len(boxes), mask_fraction, seed, name)
                write_volume(out / "labels" / f"{name}_gt.tif", gt.astype(np.uint16), spacing)
                write_volume(out / "masks" / f"{name}_mask.tif", partial_mask_from_instances(gt, annotated), spacing)
                items.append(
                    {
                        "id": name,
                        "image": os.path.relpath(image, out),
                        "box": boxes.tolist(),
                        "label": [0] * len(boxes),
                        "mask": f"masks/{name}_mask.tif",
                        "mask_annotated": annotated.tolist(),
                        "spacing": [float(s) for s in spacing],
                        "gt_instances": f"labels/{name}_gt.tif",
                    }
                )
                logger.info("%s: %d cells, %d with masks", name, len(boxes), int(annotated.sum()))
        sections[section] = items
    if missing:
        raise FileNotFoundError(f"{len(missing)} CTC files missing under {root}, e.g. {missing[:3]}")
    sections.setdefault("validation", [])
    return write_datalist(out, sections)


_FRAME = re.compile(r"t(\d+)")


def to_ctc(pred_dir: str | Path, out: str | Path, sequence: str = "01") -> Path:
    """Write ``*_instances`` label volumes named ``..tTTT..`` as ``<out>/<sequence>_RES/maskTTT.tif``.

    Labels are offset so that every object of every frame has its own id; ``res_track.txt`` lists each as a
    one-frame track (``id t t 0``). Returns the result folder.

    Refused before anything is written: two predictions of one frame (``a_t000_instances`` and
    ``b_t000_instances``), a file without a frame number, an unreadable or empty file. Hidden files (a killed
    inference's ``.tmp_PID_*``) are not predictions. The result folder is written in full each time: mask files of
    an earlier run are removed, so ``res_track.txt`` and the masks always describe the same frames.
    """
    pred_dir = Path(str(pred_dir))
    res = Path(str(out)) / f"{sequence}_RES"
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"--pred {pred_dir}: no such folder")
    files = sorted(
        p for p in pred_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and "_instances" in p.name
        and p.name.lower().endswith(VOLUME_SUFFIXES)
    )
    if not files:
        raise FileNotFoundError(f"no *_instances.* label volumes in {pred_dir}")
    frames: dict[int, list[Path]] = {}
    for path in files:
        match = _FRAME.search(path.name.split("_instances")[0].split("_")[-1]) or _FRAME.search(path.name)
        if match is None:
            raise ValueError(f"{path}: no frame number tTTT in the name")
        frames.setdefault(int(match.group(1)), []).append(path)
    clashes = {t: paths for t, paths in frames.items() if len(paths) > 1}
    if clashes:
        listed = "; ".join(f"t{t:03d}: {', '.join(p.name for p in paths)}" for t, paths in sorted(clashes.items()))
        raise ValueError(f"{pred_dir}: several predictions of one frame ({listed}); keep one per frame")
    volumes = {}
    for t, (path,) in sorted(frames.items()):
        try:
            volumes[t] = relabel_consecutive(read_volume(path).astype(np.int64))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot be read as a label volume ({err})") from None
    res.mkdir(parents=True, exist_ok=True)
    for stale in res.glob("mask*.tif"):
        stale.unlink()
    tracks, offset = [], 0
    for t, labels in volumes.items():
        n = int(labels.max(initial=0))
        shifted = np.where(labels > 0, labels + offset, 0)
        if shifted.max(initial=0) >= 65536:
            raise ValueError("more than 65535 objects over all frames cannot be written as 16-bit CTC masks")
        write_volume(res / f"mask{t:03d}.tif", shifted.astype(np.uint16))
        tracks += [f"{offset + k} {t} {t} 0" for k in range(1, n + 1)]
        offset += n
    (res / "res_track.txt").write_text("\n".join(tracks) + ("\n" if tracks else ""))
    return res
