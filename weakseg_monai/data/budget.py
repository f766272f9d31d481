"""Annotation cost model of the paper (Sec. 3): one voxel mask costs about 30 3D boxes.

The weak set annotates every cell with a box and a fraction of them with a mask; the full set draws a
mask for every cell. The matched-time baseline takes the smallest number k of stacks (in datalist order,
as the paper's "4 of 13") whose full-mask cost reaches the weak set's cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weakseg_monai.data.datalist import load_section


def annotation_budget(
    dataset: str | Path, mask_fraction: float = 0.2, mask_cost: float = 30.0, box_cost: float = 1.0
) -> dict:
    """Cost in box units of the weak training set vs the fully masked one, and the matched-time subset."""
    items = load_section(dataset, "training")
    if not items:
        raise ValueError(f"{dataset}: no training items")
    cells = np.array([len(item.get("box", [])) for item in items])
    masks = np.round(mask_fraction * cells)
    weak = float((cells * box_cost + masks * mask_cost).sum())
    full_per_stack = cells * mask_cost
    cumulative = np.cumsum(full_per_stack)
    k = int(np.searchsorted(cumulative, weak) + 1) if weak <= cumulative[-1] else len(items)
    return {
        "stacks": len(items),
        "cells": int(cells.sum()),
        "mask_fraction": mask_fraction,
        "weak_cost": weak,
        "full_cost": float(full_per_stack.sum()),
        "weak_over_full": weak / float(full_per_stack.sum()),
        "matched_k": k,
        "matched_cost": float(cumulative[k - 1]),
        "matched_ids": [str(item.get("id", item["image"])) for item in items[:k]],
    }
