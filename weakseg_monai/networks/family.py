"""``InstanceModel``: what every model family gives the code that runs it (predictor, blockwise runner, writer,
inferer, and later napari, dask and bioimage.io).

A family's model is one ``nn.Module`` in two parts, as torchvision's detection models are:

- a **dense network** (``dense_network()``): ``(N, C, X, Y, Z)`` working-grid images in, a tensor or a dict of
  tensors out; what a sliding window stitches and an export traces;
- a **second stage** from the dense outputs to objects on the working grid: ``find_objects`` (boxes, scores,
  classes) and ``object_masks`` (each object's mask as probabilities in a frame), which ``instances`` pastes into
  one label volume. Blockwise inference asks for the masks of the objects a block owns only.

The model carries its input rule as buffers (``working_spacing`` (3,) µm, ``intensity_percentiles`` (2,)), and its
family id as the ``family_code`` buffer, so ``weakseg_monai.load_model`` builds the right family from a
``model.pt`` (``torch.load(..., weights_only=True)`` reads it). A family registers itself from its own module
(``weakseg_monai.families.register_family``); nothing outside that module branches on which family it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from weakseg_monai.networks.postprocess import centres_in, paste_masks_in_volume

FAMILY_KEY = "family_code"  # the state-dict entry holding the family id (ASCII codes, uint8)
LEGACY_FAMILY = "nuclei"  # checkpoints written before families existed hold today's nuclei detector
GRID_MULTIPLE = (4, 4, 2)  # the VoxRes backbone's detection stride: the default grid blocks start on and snap to
# the image is mirrored beyond each face of the volume by this fraction of the object size before prediction
# (``weakseg_monai.transforms.faces``; margins rounded up to whole grid multiples). Measured inference-only, the same
# weights off / on, mean Det F1 / Seg F1 / recall of face-cut objects: 25 face-cut-preset models (seeds 0, 1; this
# and earlier recipes) 0.811 / 0.717 / 0.718 -> 0.844 / 0.764 / 0.831 (0.3: 0.842 / 0.761 / 0.820); 17 models of the
# other nuclei presets 0.950 / 0.945 -> 0.976 / 0.969 (bundle/docs/results.md)
FACE_MIRROR_FRACTION = 0.2
Region = tuple[Sequence[float], Sequence[float]]  # (lo, hi) working voxels (x, y, z): where object centres count


def encode_family(family: str) -> Tensor:
    """``(len,)`` uint8 ASCII codes of a family id (what the ``family_code`` buffer holds)."""
    return torch.tensor(list(family.encode("ascii")), dtype=torch.uint8)


def decode_family(code: Tensor) -> str:
    """The family id of a ``family_code`` tensor."""
    return bytes(code.to(torch.uint8).cpu().tolist()).decode("ascii", errors="replace")


class InstanceModel(nn.Module):
    """Base of every family's model: the family contract, with defaults a family overrides where it has more.

    Subclasses set ``family`` (the registered id) and implement ``size_divisor``, ``dense_network``,
    ``find_objects`` and ``object_masks``; they register ``working_spacing`` and ``intensity_percentiles`` buffers.
    """

    family: ClassVar[str] = ""
    mask_threshold: float = 0.5  # ``object_masks`` probabilities above this are the object

    def __init__(self) -> None:
        super().__init__()
        # the family id as ASCII codes: a tensor, so every tool that assumes a state dict of tensors (MONAI's
        # ``copy_model_state`` in ``ckpt_export``, ``CheckpointLoader``, TorchScript, ``weights_only`` loading)
        # keeps working, which a non-tensor ``get_extra_state`` entry breaks
        self.register_buffer(FAMILY_KEY, encode_family(self.family))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        # a file from before families holds no id: it is what the caller built (``load_model`` builds nuclei)
        stored = state_dict.setdefault(prefix + FAMILY_KEY, encode_family(self.family))
        if decode_family(stored) != self.family:
            raise ValueError(
                f"this checkpoint holds a '{decode_family(stored)}' model, not '{self.family}': load it with "
                "weakseg_monai.load_model(path), which builds the checkpoint's own family"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    # ------------------------------------------------------------------ what every family implements
    def size_divisor(self) -> tuple[int, int, int]:
        """Working-grid sizes the dense network takes must be multiples of this (x, y, z)."""
        raise NotImplementedError

    def dense_network(self) -> nn.Module:
        """The part that runs per window: ``(N, C, X, Y, Z)`` -> tensor or dict of tensors."""
        raise NotImplementedError

    def find_objects(
        self, dense: Any, spatial: Sequence[int], region: Region | None = None
    ) -> list[dict[str, Tensor]]:
        """Per image of the batch: ``boxes (K, 6)`` working voxels, ``scores (K,)``, ``classes (K,)`` (>= 1),
        plus whatever the family's ``object_masks`` needs, for dense outputs of a ``spatial`` working grid.

        ``region`` (``(lo, hi)`` working voxels, x, y, z): only objects whose box centre lies in ``[lo, hi)`` count
        (the rest of the grid is a block's halo or a mirrored face). The caller drops the others
        (``centres_in``); a family that removes duplicates (NMS) applies it first, so an object's mirrored or
        neighbouring twin cannot win over it."""
        raise NotImplementedError

    def object_masks(self, dense: Any, index: int, found: dict[str, Tensor], keep: Tensor) -> tuple[Tensor, list]:
        """``frames (k, 6)`` working voxels and ``masks`` (k probability grids in [0, 1], any size each, resampled
        to their frame when pasted) of the objects ``keep`` (bool ``(K,)``) of image ``index``'s ``found``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ defaults a family may override
    def instances(
        self, dense: Any, spatial: Sequence[int], region: Region | None = None
    ) -> list[dict[str, Tensor]]:
        """Whole-grid second stage, per image: ``boxes``, ``scores``, ``labels`` (dataset labels, class - 1) and
        ``instances (X, Y, Z)`` int32 (value ``k + 1`` = box ``k``; objects left without voxels are dropped); only
        objects centred in ``region`` (see ``find_objects``)."""
        results = []
        for i, found in enumerate(self.find_objects(dense, spatial, region)):
            keep = centres_in(found["boxes"], region)
            boxes, scores, classes = found["boxes"][keep], found["scores"][keep], found["classes"][keep]
            if boxes.shape[0]:
                frames, masks = self.object_masks(dense, i, found, keep)
                instances, present = paste_masks_in_volume(masks, frames, scores, spatial, self.mask_threshold)
                boxes, scores, classes = boxes[present], scores[present], classes[present]
            else:
                instances = torch.zeros(tuple(int(s) for s in spatial), dtype=torch.int32, device=boxes.device)
            results.append({"boxes": boxes, "scores": scores, "labels": classes - 1, "instances": instances})
        return results

    def grid_multiple(self) -> tuple[int, int, int]:
        """Blocks of blockwise inference start on a multiple of this and their working sizes snap to one where that
        moves them by at most 10% (``transforms.input_rule.InputRule.block_shape``); face margins are whole
        multiples of it. Whole volumes are not snapped (``transforms.dictionary.working_shape``)."""
        return GRID_MULTIPLE

    def block_halo(self) -> Sequence[float]:
        """Working voxels (x, y, z) around a block's core so that an object centred in the core is whole in the
        block (default: 32 x 32 x 16, for families that do not know their objects' size)."""
        return (32.0, 32.0, 16.0)

    def merge_nms_threshold(self) -> float:
        """Box IoU above which two blocks' objects are the same one (kept: the higher score)."""
        return 0.3

    def typical_object_um(self) -> np.ndarray | None:
        """(x, y, z) µm of the objects the model was trained on, for the writer's spacing check; None: unknown."""
        return None

    def face_margin(self) -> tuple[float, float, float]:
        """Working voxels (x, y, z) of image mirrored beyond each face of the volume before prediction, so that an
        object a face cuts is seen whole (``FACE_MIRROR_FRACTION`` of ``typical_object_um``; none when unknown)."""
        typical = self.typical_object_um()
        if typical is None:
            return (0.0, 0.0, 0.0)
        spacing = self.get_buffer("working_spacing").tolist()
        return tuple(FACE_MIRROR_FRACTION * float(t) / float(s) for t, s in zip(typical, spacing))  # type: ignore

    def pad_mode(self) -> str:
        """How a working volume is padded at its end to ``size_divisor`` (a ``torch.nn.functional.pad`` mode):
        zeros by default (MONAI's detectors' ``pad_images``); a family whose second stage labels every voxel it
        sees (a watershed) pads with the edge voxels instead, as zeros would join the cells at that face."""
        return "constant"

    def score_threshold(self) -> float:
        """The score above which an object is kept (families without scores: 0)."""
        return 0.0

    def set_score_threshold(self, value: float) -> None:
        """Where threshold calibration writes (families with scores override)."""
        raise NotImplementedError(f"the '{self.family}' family has no score threshold to calibrate")

    @contextmanager
    def lowered_score_threshold(self, floor: float) -> Iterator[None]:
        """Predict with the score threshold lowered to ``floor`` (calibration); a no-op without scores."""
        yield


def unwrap(model: nn.Module) -> InstanceModel:
    """The family model inside a DDP / DataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


__all__ = ["FAMILY_KEY", "LEGACY_FAMILY", "InstanceModel", "Region", "decode_family", "encode_family", "unwrap"]
