"""The weak-annotation datalist: a MONAI-style ``datalist.json`` with boxes for all instances and voxel
masks for some of them.

Item fields (all spatial values in (x, y, z), boxes half-open, see :mod:`weakseg_monai.conventions`):

- ``id``: unique name of the item (defaults to the image path);
- ``image``: 3D volume (NIfTI or TIFF), path relative to the datalist;
- ``box``: ``[[x0, y0, z0, x1, y1, z1], ...]`` one per instance;
- ``label``: class per box (0 = first object class);
- ``mask``: optional instance label volume, value k > 0 = voxels of box k-1, only for annotated instances;
- ``mask_annotated``: per-box booleans, true where that instance's voxels are in ``mask``;
- ``spacing``: voxel size (x, y, z) in µm when known;
- ``gt_instances``: optional full instance label volume (value k = box k-1) for scoring and simulation.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"
SECTIONS = ("training", "validation", "test")
PATH_FIELDS = ("image", "mask", "gt_instances")


def datalist_path(dataset: str | Path) -> Path:
    """``DIR/datalist.json`` for a dataset folder, or the path itself for a JSON file (a folder named by a number
    reaches us as an int from the command line)."""
    path = Path(str(dataset))
    return path / DATALIST_NAME if path.is_dir() or path.suffix != ".json" else path


def read_datalist(dataset: str | Path) -> dict:
    """Parse the datalist JSON of a dataset folder (raw, paths as written)."""
    path = datalist_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"no datalist at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the datalist must be a JSON object with 'training' / 'validation' / 'test' lists")
    return data


def item_id(item: dict, index: int = 0) -> str:
    return str(item.get("id", item.get("image", f"item{index}")))


def resolve_paths(item: dict, base_dir: str | Path) -> dict:
    """Copy of ``item`` with its file fields made absolute against ``base_dir``."""
    out = dict(item)
    for key in PATH_FIELDS:
        if out.get(key):
            out[key] = str((Path(base_dir) / out[key]).resolve())
    return out


def select_annotated(n_instances: int, fraction: float, seed: int, key: str) -> np.ndarray:
    """Seeded, nested choice of which instances of one stack carry a voxel mask.

    The same ``(seed, key)`` gives one permutation of the instances whatever the fraction, and the
    first ``round(fraction * n)`` of it are chosen, so the 10% set lies inside the 20% set.
    Returns a bool array of length ``n_instances``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"mask fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode())])
    order = rng.permutation(n_instances)
    chosen = np.zeros(n_instances, dtype=bool)
    chosen[order[: int(round(fraction * n_instances))]] = True
    return chosen


def partial_mask_from_instances(instances: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """Keep the voxels of the annotated instances only (value k marks box k-1) and zero the rest."""
    keep = np.concatenate([[False], np.asarray(annotated, dtype=bool)])
    in_range = (instances > 0) & (instances < len(keep))
    kept = keep[np.where(in_range, instances, 0).astype(np.int64)]
    return np.where(kept, instances, 0).astype(instances.dtype)


def dumps_json(data: object) -> str:
    """JSON with 4-space indent but every list of scalars on one line (one box per line)."""
    text = json.dumps(data, indent=4)
    return re.sub(
        r"\[[^\[\]{}]*\]", lambda m: re.sub(r"\s+", " ", m.group(0)).replace("[ ", "[").replace(" ]", "]"), text
    )


def write_datalist(dataset_dir: str | Path, sections: dict[str, list[dict]]) -> Path:
    path = Path(dataset_dir) / DATALIST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_json(sections) + "\n")
    return path


def load_section(dataset: str | Path, section: str) -> list[dict]:
    """Items of one datalist section with absolute paths (empty list when the section is missing)."""
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    path = datalist_path(dataset)
    items = read_datalist(dataset).get(section) or []
    return [resolve_paths(item, path.parent) for item in items]


def load_nonempty_section(dataset: str | Path, section: str) -> list[dict]:
    """``load_section``, refusing an empty section with a message naming it and the datalist (evaluation of an
    empty ``test`` section used to exit 0 with no metrics written)."""
    items = load_section(dataset, section)
    if not items:
        raise ValueError(
            f"{datalist_path(dataset)}: the '{section}' section is empty: nothing to evaluate (add items, or choose "
            f"another one with --section)"
        )
    return items


def load_validation_items(dataset: str | Path) -> list[dict]:
    """Validation items for training: the ``validation`` section, or the training items (with a warning) when
    the datalist has none -- so a one-volume dataset still gets a validated, calibrated model."""
    items = load_section(dataset, "validation")
    if items:
        return items
    logger.warning(
        "%s has no 'validation' items: validating on the training volumes (the score threshold is calibrated "
        "and the best model chosen on data the model has seen; add a 'validation' section for an unbiased choice)",
        datalist_path(dataset),
    )
    return load_section(dataset, "training")


def validates_on_training(dataset: str | Path) -> bool:
    """True when the datalist has no ``validation`` items, so ``load_validation_items`` returns the training ones
    (``ScoreThresholdCalibrator(seen_data=...)`` then calibrates for data the model has not seen)."""
    return not load_section(dataset, "validation")


def flatten_items(batchdata) -> list[dict]:
    """The item dicts of a ``no_collation`` batch (a dict, or nested lists of crops / items)."""
    if isinstance(batchdata, dict):
        return [batchdata]
    items = []
    for entry in batchdata:
        items.extend(flatten_items(entry))
    return items
