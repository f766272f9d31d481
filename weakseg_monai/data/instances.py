"""Instance label volume helpers shared by the generator, the CTC converter, scoring and the baseline."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def boxes_from_instances(instances: np.ndarray, n: int | None = None) -> np.ndarray:
    """Half-open boxes ``(n, 6)`` of labels 1..n (what ``convert_mask_to_box`` gives per instance)."""
    n = int(instances.max(initial=0)) if n is None else n
    boxes = np.zeros((n, 6), dtype=np.int64)
    for k, sl in enumerate(ndimage.find_objects(instances, max_label=n)):
        if sl is None:
            raise ValueError(f"instance {k + 1} has no voxels")
        boxes[k] = [s.start for s in sl] + [s.stop for s in sl]
    return boxes


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Instance labels renumbered 1..n in increasing order of value (0 stays background), int32."""
    values = np.unique(labels)
    values = values[values != 0]
    lookup = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lookup[values] = np.arange(1, len(values) + 1, dtype=np.int32)
    return lookup[labels]
