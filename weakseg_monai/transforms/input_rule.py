"""``InputRule``: how a model sees a volume, defined once (in the spirit of nnU-Net's ``ConfigurationManager``).

A volume of any spacing goes to the model's working grid (``to_working``: edge-aligned resampling to the working
spacing, each size rounded to the nearest voxel, then per-image
percentile normalisation clamped to ``INTENSITY_CLAMP``), and results come back to the input's own voxel grid
(``boxes_from_working``, ``labels_from_working``). Training (``InputRuled``: the image, its label volumes and boxes),
validation and inference (``ToWorkingGridd``), the blockwise runner and the predictor all use this one rule, read
from the model's buffers (``InputRule.of(model)``; ``train.json`` builds it from ``network_def``, which the plan
fills).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import ensure_tuple

from weakseg_monai.conventions import as_count
from weakseg_monai.networks.detector import DETECTION_STRIDE
from weakseg_monai.networks.family import unwrap
from weakseg_monai.transforms.dictionary import (
    aligned_size,
    check_working_size,
    normalise,
    outlier_warning,
    resample_annotations,
    resample_volume,
    working_shape,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputRule:
    """Working spacing (x, y, z) µm, the (lower, upper) intensity percentiles mapped to 0 and 1, and the grid
    multiple (x, y, z) blocks of blockwise inference start on and snap to (the detection stride)."""

    working_spacing: tuple[float, float, float]
    intensity_percentiles: tuple[float, float] = (1.0, 99.8)
    grid_multiple: tuple[int, int, int] = DETECTION_STRIDE

    def __post_init__(self) -> None:  # lists from a JSON config become tuples (the rule is frozen and hashable)
        object.__setattr__(self, "working_spacing", tuple(float(v) for v in self.working_spacing))
        object.__setattr__(self, "intensity_percentiles", tuple(float(v) for v in self.intensity_percentiles))
        object.__setattr__(self, "grid_multiple", tuple(int(v) for v in self.grid_multiple))

    @classmethod
    def of(cls, model: torch.nn.Module) -> InputRule:
        """The rule a model of any family carries (its buffers, read now: a checkpoint loaded later changes it)."""
        model = unwrap(model)
        return cls(model.working_spacing.tolist(), model.intensity_percentiles.tolist(), model.grid_multiple())

    # ------------------------------------------------------------------ geometry
    def working_shape(self, shape: Sequence[int], spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """``(working shape, zoom = working / input)`` per axis (x, y, z) for a volume of ``shape`` at ``spacing``."""
        return working_shape(shape, spacing, self.working_spacing)

    def block_shape(self, shape: Sequence[int], zoom: Sequence[float]) -> list[int]:
        """The working size of one block of ``shape`` input voxels (the whole volume's ``zoom``), a whole number of the
        grid multiple where that moves it by at most 10% (``aligned_size``): blocks start on the grid
        (``network_blocks``), and a block's far side then does too."""
        return [aligned_size(s * z, m) for s, z, m in zip(shape, zoom, self.grid_multiple)]

    # ------------------------------------------------------------------ intensities
    def intensity_range(self, image: np.ndarray | torch.Tensor) -> tuple[float, float]:
        """``(low, high)``: the image's percentiles that map to 0 and 1."""
        array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        low, high = np.percentile(array, list(self.intensity_percentiles))
        return float(low), float(high)

    def outliers(self, image: np.ndarray | torch.Tensor, low: float, high: float, name: str) -> str | None:
        """A warning naming ``name`` when voxels normalise above the clamp (``outlier_warning``)."""
        return outlier_warning(torch.as_tensor(image), low, high, self.intensity_percentiles[1], name)

    # ------------------------------------------------------------------ there and back
    def to_working(
        self, image: torch.Tensor, spacing: Sequence[float], name: str = "input"
    ) -> tuple[torch.Tensor, dict, str | None]:
        """``(1, X, Y, Z)`` at ``spacing`` -> ``(1, X', Y', Z')`` float32 at the working spacing, normalised; the grid
        (``zoom``, ``original_shape``) ``from_working`` needs; and an outlier warning or None."""
        original = tuple(int(s) for s in image.shape[1:])
        new, zoom = self.working_shape(original, spacing)
        check_working_size(original, spacing, new)
        x = resample_volume(torch.as_tensor(image, dtype=torch.float32), new)
        low, high = self.intensity_range(x)
        warning = self.outliers(x, low, high, name)
        return normalise(x, low, high), {"zoom": zoom, "original_shape": original}, warning

    @staticmethod
    def boxes_from_working(boxes: np.ndarray, grid: Mapping) -> np.ndarray:
        """``(K, 6)`` working-grid boxes -> the input's voxels, clipped to its shape."""
        zoom, original = np.asarray(grid["zoom"]), tuple(int(s) for s in grid["original_shape"])
        return np.clip(np.asarray(boxes) / np.tile(zoom, 2), 0, np.tile(original, 2)).astype(np.float32)

    @staticmethod
    def labels_from_working(labels: torch.Tensor, grid: Mapping) -> torch.Tensor:
        """``(X', Y', Z')`` working-grid labels -> the input's ``(X, Y, Z)`` grid (nearest), Fortran-ordered.

        Upsampled in (z, y, x) memory order: the returned (x, y, z) array is then Fortran-ordered, which is what
        both writers store (TIFF z, y, x pages; NIfTI x fastest) -- no transposing copy of the output."""
        original = tuple(int(s) for s in grid["original_shape"])
        zyx = resample_volume(labels.permute(2, 1, 0).contiguous()[None], original[::-1], labels=True)[0]
        return zyx.permute(2, 1, 0)


class InputRuled(MapTransform):
    """The input rule on a training item: its image to the working grid and normalised (``InputRule.to_working``,
    as ``ToWorkingGridd`` does at inference), its label volumes (nearest) and boxes (exactly) onto the same grid.

    One transform where ``train.json`` once composed ``ResampleToSpacingd``, ``ScaleIntensityRangePercentilesd``
    and a clamp from the plan's values, so training cannot drift from what inference does with the checkpoint.

    Args:
        rule: the model's ``InputRule`` (``InputRule.of(network)``).
        keys: the image key; label_keys: label volumes; box_keys: ``(G, 6)`` boxes (``box_volume`` follows).
    """

    def __init__(
        self,
        rule: InputRule,
        keys: KeysCollection = "image",
        label_keys: KeysCollection = (),
        box_keys: KeysCollection = (),
    ) -> None:
        super().__init__(keys)
        self.rule = rule
        self.label_keys, self.box_keys = ensure_tuple(label_keys), ensure_tuple(box_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        key = self.first_key(d)
        d[key], grid, warning = self.rule.to_working(d[key], d["spacing"], str(d.get("id") or key))
        if warning:
            logger.warning(warning)
        return resample_annotations(d, d[key].shape[1:], grid["zoom"], self.label_keys, self.box_keys)


class ToWorkingGridd(MapTransform):
    """The model's input rule (``InputRule.to_working``) as a dictionary transform, for inference, evaluation,
    training's validation and ``WeakSegPredictor``: ``image (1, X, Y, Z)`` at ``spacing`` -> resampled to the
    network's working spacing (edge-aligned) and normalised by its stored percentiles, as ``InputRuled`` does in
    training. Adds ``working_grid``:
    ``{"zoom": (3,), "original_shape": (X, Y, Z), "blockwise": bool}``.

    A volume over ``max_voxels`` at the working spacing is left as it is (``blockwise=True``): it runs block by
    block (``weakseg_monai.inference.blockwise``), which resamples and normalises each block itself in bounded
    memory. The network's buffers are read at call time, so the rule follows a checkpoint loaded after the
    transform was built (``CheckpointLoader`` at the evaluator's start; keep ``num_workers=0``).

    Args:
        network: the model whose ``working_spacing`` and ``intensity_percentiles`` buffers give the rule.
        max_voxels: working-grid voxels above which the volume is left for the blockwise path; ``None``: never.
    """

    def __init__(self, network: torch.nn.Module, max_voxels: int | None = None, keys: KeysCollection = "image") -> None:
        super().__init__(keys)
        self.network = network
        self.max_voxels = None if max_voxels is None else as_count(max_voxels, "--max_whole_voxels")

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        key = self.first_key(d)
        if d.get(key) is None:  # an input that failed to load (``LoadInputd``): nothing to do
            return d
        if "error" not in d:  # a training / validation item: a failure stops the run
            return self._to_working_grid(d, key)
        try:  # an inference input (``LoadInputd``): its failure is recorded and the run goes on with the others
            return self._to_working_grid(d, key)
        except (ValueError, RuntimeError, OSError) as err:
            d[key], d["error"] = None, str(err)
            return d

    def _to_working_grid(self, d: dict, key: Hashable) -> dict:
        rule = InputRule.of(self.network)
        original = tuple(int(s) for s in d[key].shape[1:])
        new, zoom = rule.working_shape(original, d["spacing"])
        check_working_size(original, d["spacing"], new)
        blockwise = self.max_voxels is not None and int(np.prod(new)) > self.max_voxels
        if not blockwise:
            d[key], _, warning = rule.to_working(d[key], d["spacing"], str(d.get("path") or d.get("id") or "input"))
            if warning:
                logger.warning(warning)
        d["working_grid"] = {"zoom": zoom, "original_shape": original, "blockwise": blockwise}
        return d


__all__ = ["InputRule", "InputRuled", "ToWorkingGridd"]
