"""``WeakSegPredictor``: input geometry in, instances out in the same geometry, for a model of any family.

Steps (one rule for training, evaluation, inference and benchmarks): the model's input rule
(``weakseg_monai.transforms.InputRule``: edge-aligned resampling to its working spacing, per-image percentile
normalisation with its stored percentiles), pad at the end to the model's size divisor, its dense network on the
whole volume when it fits ``max_whole_voxels`` or by MONAI ``sliding_window_inference`` (stitching the dense
outputs), then the family's second stage once over the whole volume (for the nuclei family: anchors, top-k, NMS and
the RoIAlign mask head) -- so no cell is split or duplicated at window seams -- and finally boxes and labels mapped
back to the input's voxel grid. Larger volumes run block by block (``weakseg_monai.inference.blockwise``). Only the
family contract (``weakseg_monai.networks.family.InstanceModel``) is used, never a family's internals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from monai.apps.detection.utils.detector_utils import pad_images
from monai.inferers import sliding_window_inference
from scipy import ndimage

from weakseg_monai.conventions import as_count, as_fraction, as_size
from weakseg_monai.networks.family import InstanceModel
from weakseg_monai.networks.postprocess import compact_labels
from weakseg_monai.transforms.dictionary import (  # noqa: F401  (scale_percentiles, check_working_size: re-exported)
    check_working_size,
    scale_percentiles,
)
from weakseg_monai.transforms.faces import MIN_CUT_EXTENT, face_slivers, mirror_faces, model_face_pads
from weakseg_monai.transforms.input_rule import InputRule, ToWorkingGridd
from weakseg_monai.utils.boxes import touches_face

logger = logging.getLogger(__name__)


class WeakSegPredictor:
    """Run a model of any family (``InstanceModel``) on volumes of any size and spacing.

    Args:
        network: the model (its buffers give working spacing and intensity rule).
        roi_size: sliding-window size (x, y, z) at the working spacing (rounded to the size divisor), used when
            ``blockwise`` is off and a volume is over ``max_whole_voxels``.
        block_size: core size (x, y, z) in working voxels of the blocks of a large volume (a halo is added).
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        max_whole_voxels: volumes (after resampling) up to this many voxels run in one pass; larger ones block
            by block in bounded memory (``weakseg_monai.inference.blockwise``), or, with ``blockwise`` off, by a
            stitched sliding window over the whole working grid.
        device: where the network runs.
        blockwise: large volumes block by block (default) or by MONAI's stitched sliding window.
    """

    def __init__(
        self,
        network: InstanceModel,
        roi_size: Sequence[int] = (128, 128, 32),
        overlap: float = 0.25,
        sw_batch_size: int = 2,
        max_whole_voxels: int = 4_000_000,
        device: str | torch.device = "cpu",
        block_size: Sequence[int] = (192, 192, 64),
        blockwise: bool = True,
    ) -> None:
        self.network = network
        self.blockwise = bool(blockwise)
        self.roi_size = as_size(roi_size, "--sw_roi_size")
        self.overlap = as_fraction(overlap, "--sw_overlap", 0.0, 1.0, high_open=True)
        self.sw_batch_size = as_count(sw_batch_size, "--sw_batch_size")
        self.max_whole_voxels = as_count(max_whole_voxels, "--max_whole_voxels")
        self.block_size = as_size(block_size, "--block_size")
        self.device = torch.device(device)

    @property
    def working_spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.network.working_spacing.tolist())  # type: ignore[return-value]

    def working_grid(self) -> ToWorkingGridd:
        """The model's input rule (resampling + normalisation), the transform the bundle's ``preprocessing`` uses;
        volumes above ``max_whole_voxels`` are left for the blockwise path (unless ``blockwise`` is off)."""
        return ToWorkingGridd(self.network, self.max_whole_voxels if self.blockwise else None)

    def preprocess(self, image: torch.Tensor, spacing: Sequence[float]) -> tuple[torch.Tensor, dict]:
        """``(1, X, Y, Z)`` input -> normalised ``(1, X', Y', Z')`` at the working spacing (or the input itself,
        for the blockwise path), and its ``working_grid`` (zoom, original shape, blockwise)."""
        d = self.working_grid()({"image": image, "spacing": spacing})
        return d["image"], d["working_grid"]

    def predict_blockwise(self, image: torch.Tensor, zoom: np.ndarray) -> dict[str, np.ndarray]:
        """A volume larger than ``max_whole_voxels`` at the working spacing: block by block, bounded memory
        (``weakseg_monai.inference.blockwise``), percentiles over the whole volume."""
        from weakseg_monai.inference.blockwise import predict_blockwise

        array = image[0].numpy() if isinstance(image, torch.Tensor) else np.asarray(image)[0]
        rule = InputRule.of(self.network)
        low, high = rule.intensity_range(array)
        warning = rule.outliers(array, low, high, "input")
        if warning:
            logger.warning(warning)
        return predict_blockwise(
            self.network, array, zoom, (low, high), self.block_size, device=self.device
        )

    def dense_module(self) -> torch.nn.Module:
        """The part that runs per window: the family's dense network."""
        return self.network.dense_network()

    def pad(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """``(1, X, Y, Z)`` -> ``(1, 1, X', Y', Z')`` padded at the end to the size divisor (MONAI's ``pad_images``,
        as its detectors pad), and its size."""
        batch, _ = pad_images(x[None].to(self.device), 3, self.network.size_divisor(), mode=self.network.pad_mode())
        return batch, list(batch.shape[2:])

    def dense(self, x: torch.Tensor):
        """Dense outputs for a padded ``(1, 1, X, Y, Z)`` batch: one pass or stitched sliding windows."""
        module = self.dense_module()
        if x[0, 0].numel() <= self.max_whole_voxels:
            return module(x)
        divisor = self.network.size_divisor()
        roi = [max(d, min(r, s) // d * d) for r, s, d in zip(self.roi_size, x.shape[2:], divisor)]
        logger.info("sliding window %s over %s (overlap %.2f)", roi, tuple(x.shape[2:]), self.overlap)
        return sliding_window_inference(
            x,
            roi,
            self.sw_batch_size,
            module,
            overlap=self.overlap,
            mode="gaussian",
            sw_device=self.device,
            device=self.device,
        )

    @torch.inference_mode()
    def predict_working(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Instances of a normalised ``(1, X, Y, Z)`` volume at the working spacing (same grid out), its faces
        mirrored by the family's ``face_margin`` first (``weakseg_monai.transforms.faces``) and cropped back after;
        only objects centred in the volume itself are kept (a mirrored twin cannot suppress its original)."""
        self.network.eval()
        shape = tuple(x.shape[1:])
        mirrored, before = self.mirrored(x)
        batch, padded = self.pad(mirrored)
        end = [b + s for b, s in zip(before, shape)]
        result = self.network.instances(self.dense(batch), padded, (before, end))[0]  # centred in the volume itself
        boxes = result["boxes"] - torch.tensor(before * 2, device=result["boxes"].device, dtype=result["boxes"].dtype)
        boxes = torch.minimum(boxes.clamp(min=0), torch.tensor(shape * 2, device=boxes.device, dtype=boxes.dtype))
        (x0, y0, z0), (x1, y1, z1) = before, end
        return dict(result, boxes=boxes, instances=result["instances"][x0:x1, y0:y1, z0:z1])

    def mirrored(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """A ``(C, X, Y, Z)`` working volume with the family's ``face_margin`` mirrored beyond its faces, and the
        voxels added before each axis (what training's ``MirrorFacesd`` gives a training volume)."""
        before, after = model_face_pads(self.network, x.shape[1:])
        return mirror_faces(x, before, after), before

    def __call__(self, image: torch.Tensor, spacing: Sequence[float]) -> dict[str, np.ndarray]:
        """Instances of a ``(1, X, Y, Z)`` image of the given (x, y, z) spacing, in its own voxel grid.

        Returns numpy arrays: ``boxes (K, 6)`` float32, ``scores (K,)``, ``labels (K,)`` (dataset labels) and
        ``instances (X, Y, Z)`` int32 with value ``k + 1`` for box ``k``.
        """
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"expected a single-channel (1, X, Y, Z) volume, got shape {tuple(image.shape)}")
        return self.predict_prepared(*self.preprocess(image, spacing))

    def predict_prepared(self, x: torch.Tensor, grid: dict) -> dict[str, np.ndarray]:
        """``__call__`` after ``ToWorkingGridd``: ``x`` at the working grid (or the input, for the blockwise
        path) and its ``working_grid``; returns the instances in the input's own voxel grid, face slivers dropped."""
        zoom = np.asarray(grid["zoom"])
        result = self.predict_blockwise(x, zoom) if grid["blockwise"] else self.predict_whole(x, grid)
        return drop_face_slivers(result, self.sliver_axes(zoom))

    def predict_whole(self, x: torch.Tensor, grid: dict) -> dict[str, np.ndarray]:
        """``x`` at the working grid in one pass (``predict_working``), mapped back to the input's voxel grid."""
        original = tuple(int(s) for s in grid["original_shape"])
        result = self.predict_working(x)
        boxes = InputRule.boxes_from_working(result["boxes"].cpu().numpy(), grid)
        found = {"boxes": boxes, "scores": result["scores"].cpu().numpy(), "labels": result["labels"].cpu().numpy()}
        # cropping the padding can leave an instance without voxels: checked on the small working grid
        working = drop_vanished(result["instances"].cpu(), found)
        instances = InputRule.labels_from_working(working, grid)
        if any(o < w for o, w in zip(original, working.shape)):
            # shrinking back, an instance can vanish (sub-voxel at the input grid). Growing (the usual case)
            # nearest-exact hits every working voxel, so the full-size output needs no second pass.
            instances = drop_vanished(instances, found)
        return dict(found, instances=instances.numpy())

    def sliver_axes(self, zoom: np.ndarray) -> list[bool]:
        """The axes (x, y, z) along which the model's typical object spans more than ``MIN_CUT_EXTENT`` input voxels
        (``zoom``: working / input voxels): there a face sliver (``face_slivers``) is a piece, not a whole object,
        and is dropped. None when the model does not know its objects' size."""
        typical = self.network.typical_object_um()
        if typical is None:
            return [False, False, False]
        voxels = np.asarray(typical, dtype=np.float64) / np.asarray(self.working_spacing) / np.asarray(zoom)
        return (voxels > MIN_CUT_EXTENT).tolist()


def scale_mismatch(
    boxes: np.ndarray, spacing: Sequence[float], network: InstanceModel, shape: Sequence[int] | None = None
) -> str | None:
    """A warning when the objects found look much smaller or larger than those the model was trained on
    (``typical_object_um()`` of its family; no check for a family that does not know), or when nothing was
    found: usually a wrong spacing. With the volume's ``shape`` (x, y, z voxels), objects a face cuts are left out
    (their boxes are pieces: a crop smaller than the cells is not a wrong spacing)."""
    spacing_um = np.asarray(spacing, dtype=np.float64)
    trained_um = network.typical_object_um()
    if trained_um is None:
        return None
    trained = " x ".join(f"{v:.3g}" for v in trained_um)
    if len(boxes) == 0:
        return (
            f"no objects found; the model finds objects of about {trained} µm: if the volume holds some, check its "
            f"spacing {tuple(float(v) for v in spacing_um)} µm (file metadata or --spacing)"
        )
    if shape is not None:
        boxes = np.asarray(boxes)[~touches_face(np.asarray(boxes), shape)]
    if len(boxes) < 3:
        return None
    found_um = np.median((boxes[:, 3:] - boxes[:, :3]) * spacing_um, axis=0)
    ratio = float(np.exp(np.mean(np.log(np.maximum(found_um, 1e-6) / trained_um))))
    if 0.5 <= ratio <= 2.0:
        return None
    word = "smaller" if ratio < 1 else "larger"
    return (
        f"objects look ~{max(ratio, 1 / ratio):.1f}x {word} than the model was trained on (median found "
        f"{' x '.join(f'{v:.3g}' for v in found_um)} µm vs about {trained} µm): check the spacing "
        f"{tuple(float(v) for v in spacing_um)} µm, or retrain on such data"
    )


def drop_vanished(instances: torch.Tensor, found: dict[str, np.ndarray]) -> torch.Tensor:
    """Drop (in place in ``found``: boxes, scores, labels) the instances with no voxel left in ``instances``
    (values ``k + 1``) and renumber the rest consecutively; returns the renumbered volume."""
    instances, keep = compact_labels(instances, len(found["boxes"]))
    if not bool(keep.all()):
        for key in found:
            found[key] = found[key][keep.numpy()]
    return instances


def drop_face_slivers(result: dict[str, np.ndarray], axes: Sequence[bool]) -> dict[str, np.ndarray]:
    """A prediction (``boxes``, ``scores``, ``labels``, ``instances (X, Y, Z)`` with value ``k + 1`` for box ``k``)
    without the instances whose voxels are a face sliver (``face_slivers`` along ``axes``), renumbered."""
    instances = result["instances"]
    n = len(result["boxes"])
    if not n or not any(axes):
        return result
    found = ndimage.find_objects(instances, max_label=n)
    extents = np.array([[s.start for s in f] + [s.stop for s in f] if f is not None else [0] * 6 for f in found])
    slivers = face_slivers(extents, instances.shape, axes) & np.array([f is not None for f in found])
    if not slivers.any():
        return result
    instances = np.where(np.isin(instances, np.nonzero(slivers)[0] + 1), 0, instances).astype(instances.dtype)
    kept = {key: value for key, value in result.items() if key != "instances"}
    compact = drop_vanished(torch.from_numpy(np.asfortranarray(instances)), kept).numpy()
    return dict(kept, instances=compact)


def BaselinePredictor(network: InstanceModel, **kwargs) -> WeakSegPredictor:  # noqa: N802 (a documented name)
    """The name ``inference_baseline.json`` and the benchmarks use: a ``WeakSegPredictor`` that runs a large
    volume by MONAI's stitched sliding window (how the baseline's published timings were taken) instead of
    block by block. Any family works; the model's own second stage turns dense outputs into instances."""
    kwargs.setdefault("blockwise", False)
    return WeakSegPredictor(network, **kwargs)
