"""Self-configuring training plan (nnU-Net style): the dataset fingerprint in, the recipe out.

The architecture stays fixed (one checkpoint contract: ``model.pt`` is a plain state dict that loads into
``WeakInstanceSegNet()``); the plan adapts the *data* to it and the schedule to the dataset:

- ``working_spacing``: the network's strides, anchors and RoI sizes were built for objects of about
  ``TARGET_OBJECT_VOXELS`` (18 x 18 x 9 voxels: ~10 µm HL60 nuclei at 0.5 x 0.5 x 1 µm). Where the native
  spacing puts the median object inside ``KEEP_BAND`` the data keeps its own spacing (no needless
  interpolation), else it is resampled so the median object lands on the target. z may stay coarser. No
  training volume grows past ``MAX_WORKING_VOXELS`` (tiny objects in a large volume get a coarser grid).
- ``patch_size``: at least the architecture's 64 x 64 x 32, at least 2.5 objects across, at most the volume.
- ``anchor_shapes``: k-means of all training boxes at the working spacing, plus the shapes the objects cut by
  a volume face need (slivers): at least 95% of the face-cut and of the whole boxes get an anchor the matcher calls
  positive (``plan_anchor_shapes``; the share is in the plan table).
- ``iterations`` / ``val_interval``: optimizer steps by dataset size, a CPU-friendly budget.
- ``nms_thresh``: above the overlap of touching ground-truth boxes, so NMS does not delete real neighbours.
- ``score_thresh``: a starting value; training calibrates it on validation and stores it in the checkpoint.

Every value is a top-level id of ``train.json`` the user can override; the planner's methods take the values they
depend on as arguments, so an override propagates (e.g. a hand-set ``working_spacing`` changes the planned anchors
and patch).

Classes, in the shape of nnU-Net's ``ExperimentPlanner``: ``ExperimentPlanner`` makes the one fingerprint pass and
plans what every family needs (working spacing, patch, batch, schedule); a planner per family adds its own values
and takes its constants from its family's model: ``NucleiPlanner`` (the ``nuclei`` detector: anchors, NMS, the box
terms; ``TrainingPlanner`` is its old name) and ``BaselinePlanner`` (the VoxResNet + CC baseline of
``train_baseline.json``, which plans its working spacing and patch by the same rules instead of fixing them).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from weakseg_monai.conventions import as_count, as_flag, as_fraction, as_size, as_spacing
from weakseg_monai.families.registry import get_family
from weakseg_monai.networks.baseline import VoxResSegNet
from weakseg_monai.networks.detector import (
    DEFAULT_STRIDES,
    DETECTION_STRIDE,
    WeakInstanceSegNet,
    face_margin_for_anchors,
)
from weakseg_monai.networks.wallmap import WallMapNet
from weakseg_monai.planning.fingerprint import (
    DatasetFingerprint,
    VolumeBoxes,
    dataset_fingerprint,
    training_volumes,
)
from weakseg_monai.transforms.faces import face_pads, mirror_boxes
from weakseg_monai.utils.anchors import anchor_hits, anchor_shapes_covering, anchor_shapes_from_boxes
from weakseg_monai.utils.matching import POSITIVE_IOU

logger = logging.getLogger(__name__)

TARGET_OBJECT_VOXELS = (18.0, 18.0, 9.0)
# no training volume grows past this many voxels at the working spacing (cached as float32 image + int32 labels)
MAX_WORKING_VOXELS = 48_000_000
KEEP_BAND = ((12.0, 28.0), (12.0, 28.0), (5.0, 14.0))
BASE_PATCH = (64, 64, 32)
MAX_PATCH = (128, 128, 64)
BASE_BATCH = 2
# the default backbone's (both built-in families'): a family's planner asks its own model (``size_divisor``)
SIZE_DIVISOR = tuple(int(np.prod([s[a] for s in DEFAULT_STRIDES])) for a in range(3))
PLAN_FILE = "plan.json"
# objects whose central third is barely brighter than the volume's median look like a cell-wall / membrane
# stain: 0.28-0.60 on the six nuclei datasets of the generalisation suite, 0.08 on its membrane stain
MIN_CORE_CONTRAST = 0.15


def plan_working_spacing(
    fingerprint: DatasetFingerprint,
    target: Sequence[float] = TARGET_OBJECT_VOXELS,
    keep_band: Sequence[Sequence[float]] = KEEP_BAND,
    max_upsample: float | None = None,
) -> list[float]:
    """(x, y, z) µm at which the median object measures about ``TARGET_OBJECT_VOXELS`` (or native if in band).

    In-plane axes share one spacing (their mean object size); z is never finer than in-plane, and no axis finer
    than ``native / max_upsample`` (``None``: no limit).
    """
    native = np.asarray(fingerprint.spacing_um)
    size_um = np.asarray(fingerprint.object_um_median)
    spacing = native.copy()
    inplane_um = float(size_um[:2].mean())
    inplane_vox = inplane_um / float(native[:2].mean())
    lo, hi = keep_band[0]
    if not lo <= inplane_vox <= hi:
        spacing[:2] = inplane_um / target[0]
    z_vox = size_um[2] / native[2]
    lo, hi = keep_band[2]
    if not lo <= z_vox <= hi:
        spacing[2] = size_um[2] / target[2]
    if max_upsample is not None:
        spacing = np.maximum(spacing, native / float(max_upsample))
    spacing[2] = max(spacing[2], spacing[:2].max())
    largest = float(fingerprint.largest_volume_um3 or 0.0)
    if largest / float(np.prod(spacing)) > MAX_WORKING_VOXELS:
        # tiny objects in a large volume: a coarser grid (objects below the target size) rather than a volume
        # that does not fit in memory
        spacing *= (largest / float(np.prod(spacing)) / MAX_WORKING_VOXELS) ** (1.0 / 3.0)
    return [_round_sig(v) for v in spacing]


def _round_sig(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def plan_patch_size(
    fingerprint: DatasetFingerprint,
    working_spacing: Sequence[float],
    divisors: Sequence[int] = SIZE_DIVISOR,
    base: Sequence[int] = BASE_PATCH,
    objects_across: float = 2.5,
) -> list[int]:
    """Crop size (x, y, z) at the working spacing, a multiple of the backbone's size divisor (``divisors``), square
    in-plane (the larger of the two: a volume narrower than the patch is padded) so in-plane quarter turns augment
    it; at least ``base`` and ``objects_across`` large (p90) objects across."""
    scale = np.asarray(fingerprint.spacing_um) / np.asarray(working_spacing, dtype=np.float64)
    volume = np.asarray(fingerprint.volume_voxels) * scale
    big_object = np.asarray(fingerprint.object_um_p90) / np.asarray(working_spacing, dtype=np.float64)
    patch = []
    for axis in range(3):
        want = min(max(base[axis], objects_across * big_object[axis]), MAX_PATCH[axis], volume[axis])
        divisor = divisors[axis]
        patch.append(int(max(divisor, math.ceil(want / divisor) * divisor)))
    patch[0] = patch[1] = max(patch[0], patch[1])
    return patch


MAX_ANCHOR_SHAPES = 9
MIN_ANCHOR_SHARE = 0.95  # of the face-cut and of the whole boxes: an anchor above the matcher's positive IoU
MIN_ANCHORED_EXTENT = 3  # boxes thinner than this (working voxels) in some axis are not counted


def _anchor_geometry(volumes: Sequence[VolumeBoxes], working_spacing: Sequence[float]):
    """Boxes at the working grid per volume with its padded size, and over all boxes: face-cut, and sized
    (at least ``MIN_ANCHORED_EXTENT`` working voxels per axis)."""
    at = [v.at_spacing(working_spacing) for v in volumes]
    pairs = [(v.boxes, _padded_size(v.shape)) for v in at]
    boxes = np.concatenate([v.boxes for v in at]) if at else np.zeros((0, 6))
    cut = np.concatenate([v.face_cut() for v in at]) if at else np.zeros(0, dtype=bool)
    sized = ((boxes[:, 3:] - boxes[:, :3]) >= MIN_ANCHORED_EXTENT).all(axis=1)
    return pairs, boxes, cut, sized


def plan_anchor_shapes(volumes: Sequence[VolumeBoxes], working_spacing: Sequence[float]) -> list[list[float]]:
    """Anchor shapes (x, y, z working voxels): k-means (3) of all training boxes, face-cut ones included (in a crop
    they are most of what the detector must match), then as many as ``MAX_ANCHOR_SHAPES`` added until
    ``MIN_ANCHOR_SHARE`` of the face-cut and of the whole boxes have a positive anchor (``anchor_shapes_covering``).
    The boxes are taken as they lie in the volume; ``anchor_coverage`` also reports the face-cut share at the
    mirrored faces. Covering that frame too was tried once (face-cut seed 1, where it swapped the flat
    ``[22, 22, 4]`` for ``[20, 20, 8]``): Det F1 0.903 and face-cut recall 0.83 against 0.925 and 0.87, within
    retraining noise but no gain, so the covering stays in the frame the suite rows were measured with.

    Measured (``scripts/generalisation.py``, crowd, where 78% of the training boxes are face-cut): k-means of the
    whole objects alone, with the same coverage rule, gave Det F1 0.829 (mean of seeds 0-2) against 0.928 for the
    recipe before face-cut anchors; this rule gives 0.962 (seed 0)."""
    pairs, boxes, cut, sized = _anchor_geometry(volumes, working_spacing)
    base = anchor_shapes_from_boxes(boxes, 3)
    return anchor_shapes_covering(
        pairs, base, DETECTION_STRIDE, [sized & cut, sized & ~cut], POSITIVE_IOU, MIN_ANCHOR_SHARE, MAX_ANCHOR_SHAPES
    )


def anchor_coverage(
    volumes: Sequence[VolumeBoxes], working_spacing: Sequence[float], anchor_shapes: Sequence[Sequence[float]]
) -> dict[str, float | None]:
    """Share of the training boxes (at least ``MIN_ANCHORED_EXTENT`` working voxels per axis) that some anchor
    matches above the matcher's positive IoU; None where there are none:

    - ``face_cut`` / ``whole``: the boxes as they lie in the volume (how a crop-cut sliver reaches the matcher);
    - ``face_cut_mirrored``: the face-cut boxes as the matcher sees them at the volume's faces, which training
      (``MirrorFacesd``) and prediction mirror by the anchors' face margin (``face_margin_for_anchors``): a sliver
      and its reflection are one box there.
    """
    pairs, _, cut, sized = _anchor_geometry(volumes, working_spacing)
    hit = anchor_hits(pairs, anchor_shapes, DETECTION_STRIDE, POSITIVE_IOU)
    mirrored = anchor_hits(
        _mirrored_pairs(volumes, working_spacing, anchor_shapes), anchor_shapes, DETECTION_STRIDE, POSITIVE_IOU
    )
    return {
        "face_cut": _share_of(hit, sized & cut),
        "whole": _share_of(hit, sized & ~cut),
        "face_cut_mirrored": _share_of(mirrored, sized & cut),
    }


def _share_of(hit: np.ndarray, group: np.ndarray) -> float | None:
    """Share of ``group`` (bool mask) that ``hit`` marks, to 3 decimals; None for an empty group."""
    return round(float(hit[group].mean()), 3) if group.any() else None


def _padded_size(shape: Sequence[int]) -> list[int]:
    """``shape`` padded up to the backbone's size divisor, as the network pads its input."""
    return [int(math.ceil(s / d) * d) for s, d in zip(shape, SIZE_DIVISOR)]


def _mirrored_pairs(
    volumes: Sequence[VolumeBoxes], working_spacing: Sequence[float], anchor_shapes: Sequence[Sequence[float]]
) -> list[tuple[np.ndarray, list[int]]]:
    """Per volume at the working grid: its boxes after mirroring its faces by the anchors' face margin (in the
    mirrored volume's voxels, one row per input box) and the mirrored volume's size padded to the size divisor."""
    margin = face_margin_for_anchors(anchor_shapes)
    pairs = []
    for volume in (v.at_spacing(working_spacing) for v in volumes):
        before, after = face_pads(margin, volume.shape, multiple=DETECTION_STRIDE)
        boxes, _, _ = mirror_boxes(volume.boxes.astype(np.float32), volume.shape, before, after)
        size = [s + b + a for s, b, a in zip(volume.shape, before, after)]
        pairs.append((boxes[: len(volume.boxes)], _padded_size(size)))
    return pairs


def plan_batch_size(patch_size: Sequence[int]) -> int:
    """Crops per step: ``BASE_BATCH`` at the base patch, more (up to 4) for small patches (same voxels per step)."""
    ratio = np.prod(BASE_PATCH) / max(float(np.prod(patch_size)), 1.0)
    return int(np.clip(round(BASE_BATCH * ratio), BASE_BATCH, 4))


def plan_iterations(fingerprint: DatasetFingerprint) -> int:
    """Optimizer steps: 1200 for a few dozen objects, up to 2000 for hundreds (measured 3-7 min on 2 CPU cores)."""
    steps = int(np.clip(1000 + 4 * fingerprint.n_objects, 1200, 2000))
    return steps // 100 * 100


def plan_val_interval(iterations: int) -> int:
    """Validate (and checkpoint) five times per run: every ``iterations // 5`` steps (at least 1)."""
    return max(1, int(iterations) // 5)


def plan_nms_threshold(fingerprint: DatasetFingerprint) -> float:
    """NMS IoU above the overlap of touching ground-truth boxes (0.3 for separated objects, at most 0.6)."""
    return float(np.clip(round(fingerprint.box_overlap_p95 + 0.1, 2), 0.3, 0.6))


BOX_TERMS_BELOW_MASKED_SHARE = 0.05  # box-supervised mask terms on when fewer boxes than this carry a voxel mask
BOX_TERMS_MASK_CONTEXT = 0.25  # the mask frame the box terms need (box grown by this share of its size per side)
ASSISTING_BOX_TERMS_MASK_CONTEXT = 0.1  # the same when voxel masks lead and the box terms only assist


def plan_box_mask_loss_weight(fingerprint: DatasetFingerprint, mask_fraction: float | None = None) -> float:
    """1.0 (the box-supervised mask terms on) when fewer than 5% of the training boxes have a voxel mask, else 0.

    With (almost) no masks the head has nothing else to learn from: from boxes alone the terms give Seg F1 0.94 on
    the synthetic test stacks (0.00 without). With 20% masks they gain nothing measurable in the quick Table 1
    schedule (Seg F1 0.903 against 0.905, three paired seeds, ``bundle/docs/results.md``; 0.890 when they also
    train the backbone), so there the paper's rule stays. ``mask_fraction``: the
    share the run keeps (``--mask_fraction``); None = the datalist's own ``mask_annotated``.
    """
    return 1.0 if box_terms_lead(fingerprint, mask_fraction) else 0.0


def box_terms_lead(fingerprint: DatasetFingerprint, mask_fraction: float | None = None) -> bool:
    """Whether fewer than 5% of the training boxes have a voxel mask (``mask_fraction`` when the run sets one, else
    the datalist's share), so the box terms are the mask head's main teacher."""
    if mask_fraction is None:
        share = fingerprint.n_masked / max(fingerprint.n_objects, 1)
    else:
        share = float(mask_fraction)
    return share < BOX_TERMS_BELOW_MASKED_SHARE


def plan_box_terms_train_backbone(fingerprint: DatasetFingerprint, mask_fraction: float | None = None) -> bool:
    """Whether the box terms' gradients reach the backbone: yes when they lead (fewer than 5% of the boxes have a
    voxel mask, where they are planned on), no when voxel masks lead and the box terms only assist.

    Measured (CPU quick Table 1, 3 paired seeds; ``bundle/docs/results.md``): with 20% masks, the box terms
    through the backbone cost Seg F1 (0.890 against 0.905 without the terms), through the mask head alone not
    (0.903). From boxes alone, keeping them off the backbone steadied the quick schedule on the HL60-like data
    but collapsed one generalisation dataset (small-dense Seg F1 0.78 -> 0.11), so there they stay on it.
    """
    return box_terms_lead(fingerprint, mask_fraction)


def plan_mask_context(box_mask_loss_weight: float, box_terms_lead: bool = True) -> float:
    """The mask head's frame: grown boxes when the box terms are on (their outside term needs background in the
    grid), the paper's tight RoIs otherwise. Grown less when voxel masks lead (``box_terms_lead`` False): frames
    grown by 0.25 alone cost 0.10 Seg F1 with 20% masks, by 0.1 the box terms cost nothing measurable
    (``bundle/docs/results.md``)."""
    if float(box_mask_loss_weight) <= 0:
        return 0.0
    return BOX_TERMS_MASK_CONTEXT if box_terms_lead else ASSISTING_BOX_TERMS_MASK_CONTEXT


# the family choice, two features of the boxed objects (``DatasetFingerprint``), in units of the intensity range:
# - core - rim contrast (mean of a box's central third - mean of its rim): measured on two generations each (seeds 0,
#   1), the seven nuclei presets 0.19-0.51 (the packed crowd lowest); membrane stains -0.09-0.04 (thin or thick walls,
#   blurred, 4-12 photons, small cells, with up to 60% of the volume background);
# - core contrast (central third - the volume's median): nuclei presets >= 0.21, and 0.38 / 0.95 on two small test
#   datasets whose rim the nuclei fill (tiny blurred nuclei; flat cubes in tight boxes: core - rim 0.08 / 0.00);
#   membrane <= 0.31 (background raises it: the median drops). Gets wrong: a small field of view that is 75%
#   background, where most cells sit at the tissue's edge with background in their rim (core - rim 0.15-0.31).
# ``boundary`` when both say walls; when only one does, ``nuclei`` and the plan says so.
BOUNDARY_BELOW_RIM_CONTRAST = 0.10
BOUNDARY_BELOW_CORE_CONTRAST = 0.35


def plan_family(fingerprint: DatasetFingerprint) -> dict:
    """Which model family the data asks for, and why: ``family`` (``nuclei`` | ``boundary``), ``features`` (the two
    values and their thresholds), ``margin`` (how far the deciding feature lies past its threshold), ``why`` (a
    sentence) and ``agrees`` (whether the two features say the same)."""
    rim, core = fingerprint.object_core_rim_contrast, fingerprint.object_core_contrast
    features = {
        "object_core_rim_contrast": {"value": rim, "boundary_below": BOUNDARY_BELOW_RIM_CONTRAST},
        "object_core_contrast": {"value": core, "boundary_below": BOUNDARY_BELOW_CORE_CONTRAST},
    }
    if core is None:
        return {"family": "nuclei", "features": features, "margin": None, "agrees": True,
                "why": "no box was large enough to measure; the default family"}
    if rim is None:  # boxes too small for a rim: the core contrast alone, at the old warning's threshold
        walls = core < MIN_CORE_CONTRAST
        margin = abs(core - MIN_CORE_CONTRAST)
        why = (f"core contrast {core:.3f} {'<' if walls else '>='} {MIN_CORE_CONTRAST} (boxes too small in-plane "
               "for a rim)")
        return {"family": "boundary" if walls else "nuclei", "features": features, "margin": round(margin, 4),
                "agrees": True, "why": why}
    by_rim, by_core = rim < BOUNDARY_BELOW_RIM_CONTRAST, core < BOUNDARY_BELOW_CORE_CONTRAST
    walls = by_rim and by_core
    rim_text = f"core - rim contrast {rim:.3f} {'<' if by_rim else '>='} {BOUNDARY_BELOW_RIM_CONTRAST}"
    core_text = f"core contrast {core:.3f} {'<' if by_core else '>='} {BOUNDARY_BELOW_CORE_CONTRAST}"
    if walls:
        margin = min(BOUNDARY_BELOW_RIM_CONTRAST - rim, BOUNDARY_BELOW_CORE_CONTRAST - core)
        why = f"objects are dark inside their rim ({rim_text}; {core_text}): a membrane / cell-wall stain"
    else:
        margin = max(rim - BOUNDARY_BELOW_RIM_CONTRAST, core - BOUNDARY_BELOW_CORE_CONTRAST)
        why = f"objects are filled ({rim_text}; {core_text}): e.g. stained nuclei"
    agrees = by_rim == by_core
    if not agrees:
        why += "; the two features disagree, so check the channel or set --family"
    return {"family": "boundary" if walls else "nuclei", "features": features, "margin": round(margin, 4),
            "agrees": bool(agrees), "why": why}


class ExperimentPlanner:
    """The plan of one dataset for one model family, computed lazily (the embedded synthetic dataset is written at
    initialisation): one fingerprint pass, then one method per planned id.

    ``train.json`` calls one method per planned id; each method takes the ids it depends on, so a value the
    user sets on the command line propagates to the values derived from it. A family's planner subclasses this
    one, names its ``family`` and ``model`` (a default instance's ``size_divisor()`` is the patch's) and adds its own
    values to ``planned``.
    """

    family: str = ""
    model: type | None = None
    # what the family's architecture was built for: the median object in working voxels (and the band in which a
    # dataset keeps its own spacing), and the smallest crop; a family with other objects overrides them
    target_object_voxels: tuple[float, float, float] = TARGET_OBJECT_VOXELS
    keep_band: tuple = KEEP_BAND
    base_patch: tuple[int, int, int] = BASE_PATCH
    patch_objects_across: float = 2.5
    max_upsample: float | None = None  # no working axis finer than native / this (None: as fine as the target asks)

    def __init__(self, dataset_dir: str | Path) -> None:
        self.dataset_dir = str(dataset_dir)

    @cached_property
    def size_divisor(self) -> tuple[int, int, int]:
        """What the family's model (default build) needs working-grid sizes to be multiples of (x, y, z). Built with the
        random state restored, so planning draws nothing from the seeded stream the real network's initialisation
        uses."""
        if self.model is None:
            return SIZE_DIVISOR
        with torch.random.fork_rng(devices=[]):
            return tuple(int(v) for v in self.model().size_divisor())  # type: ignore[return-value]

    @cached_property
    def volumes(self) -> list[VolumeBoxes]:
        return training_volumes(self.dataset_dir)

    @cached_property
    def fingerprint(self) -> DatasetFingerprint:
        return dataset_fingerprint(self.dataset_dir, self.volumes)

    def working_spacing(self) -> list[float]:
        return plan_working_spacing(self.fingerprint, self.target_object_voxels, self.keep_band, self.max_upsample)

    def patch_size(self, working_spacing: Sequence[float]) -> list[int]:
        return plan_patch_size(
            self.fingerprint, working_spacing, self.size_divisor, self.base_patch, self.patch_objects_across
        )

    def batch_size(self, patch_size: Sequence[int]) -> int:
        return plan_batch_size(patch_size)

    def iterations(self, epochs: int | None = None) -> int:
        """Planned steps, or ``epochs`` x training items when the deprecated ``--epochs`` is given."""
        if epochs is not None:
            steps = int(epochs) * self.fingerprint.n_volumes
            warnings.warn(
                f"--epochs is deprecated: training length is now --iterations (optimizer steps); "
                f"--epochs {epochs} x {self.fingerprint.n_volumes} training items = {steps} iterations",
                FutureWarning,
                stacklevel=2,
            )
            return max(1, steps)
        return plan_iterations(self.fingerprint)

    def val_interval(self, iterations: int) -> int:
        return plan_val_interval(int(iterations))

    def for_family(self, family: str) -> ExperimentPlanner:
        """``family``'s planner of the same dataset, sharing this one's training volumes and fingerprint (one pass
        over the data)."""
        planner = planner_for(family)(self.dataset_dir)
        planner.__dict__.update({k: v for k, v in self.__dict__.items() if k in ("volumes", "fingerprint")})
        return planner

    def model_family(self) -> str:
        """The family the data asks for (``plan_family``); ``train.json``'s ``family`` id, which a user may set."""
        return plan_family(self.fingerprint)["family"]

    def planned(self, mask_fraction: float | None = None) -> dict:
        """Every planned value with nothing overridden (``mask_fraction``: the run's, which a family may follow)."""
        spacing = self.working_spacing()
        patch = self.patch_size(spacing)
        return {"working_spacing": spacing, "patch_size": patch, "batch_size": self.batch_size(patch)}

    def report(self, used: Mapping[str, object]) -> dict:
        """The plan document: family, fingerprint, planned values, the values this run uses and which were
        overridden."""
        mask_fraction = used.get("mask_fraction")
        planned = self.planned(None if mask_fraction is None else float(mask_fraction))  # type: ignore[arg-type]
        overridden = sorted(k for k, v in used.items() if k in planned and _differs(planned[k], v))
        return {
            "family": self.family,
            "family_choice": plan_family(self.fingerprint),
            "dataset_dir": str(Path(self.dataset_dir).resolve()),
            "fingerprint": self.fingerprint.to_dict(),
            "planned": planned,
            "used": dict(used),
            "overridden": overridden,
            "warnings": data_warnings(self.fingerprint, self.family),
        }

    def check(self, used: Mapping[str, object]) -> dict:
        """``check_used`` with this family's size divisor: the values a run uses, each bad one naming its flag."""
        return check_used(used, self.size_divisor)

    def save(self, output_dir: str | Path, used: Mapping[str, object]) -> Path:
        """Check the values this run uses (``check``), log the plan as a table and write ``output_dir/plan.json``
        (never into the dataset folder)."""
        used = self.check(used)
        report = self.report(used)
        logger.info("training plan for %s\n%s", self.dataset_dir, format_plan(report))
        for warning in report["warnings"]:
            logger.warning("%s: %s", self.dataset_dir, warning)
        path = Path(str(output_dir)) / PLAN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        logger.info("plan written to %s", path)
        return path


class NucleiPlanner(ExperimentPlanner):
    """The ``nuclei`` family (``WeakInstanceSegNet``): adds the anchor shapes, the NMS threshold and the box-supervised
    mask terms (weight, frame, whether they reach the backbone) to the plan, and the anchor coverage to its report."""

    family = "nuclei"
    model = WeakInstanceSegNet

    def anchor_shapes(self, working_spacing: Sequence[float]) -> list[list[float]]:
        return plan_anchor_shapes(self.volumes, working_spacing)

    def nms_thresh(self) -> float:
        return plan_nms_threshold(self.fingerprint)

    def box_mask_loss_weight(self, mask_fraction: float | None = None) -> float:
        return plan_box_mask_loss_weight(self.fingerprint, mask_fraction)

    def mask_context(self, box_mask_loss_weight: float, box_terms_train_backbone: bool = True) -> float:
        return plan_mask_context(box_mask_loss_weight, as_flag(box_terms_train_backbone, "box_terms_train_backbone"))

    def box_terms_train_backbone(self, mask_fraction: float | None = None) -> bool:
        return plan_box_terms_train_backbone(self.fingerprint, mask_fraction)

    def planned(self, mask_fraction: float | None = None) -> dict:
        common = super().planned(mask_fraction)
        iterations = self.iterations()
        box_weight = self.box_mask_loss_weight(mask_fraction)
        train_backbone = self.box_terms_train_backbone(mask_fraction)
        return {
            **common,
            "anchor_shapes": self.anchor_shapes(common["working_spacing"]),
            "iterations": iterations,
            "val_interval": self.val_interval(iterations),
            "nms_thresh": self.nms_thresh(),
            "box_mask_loss_weight": box_weight,
            "mask_context": self.mask_context(box_weight, train_backbone),
            "box_terms_train_backbone": train_backbone,
        }

    def report(self, used: Mapping[str, object]) -> dict:
        report = super().report(used)
        report["anchor_coverage"] = anchor_coverage(self.volumes, used["working_spacing"], used["anchor_shapes"])
        return report


TrainingPlanner = NucleiPlanner  # the name train.json and scripts used before the planner per family


class BaselinePlanner(ExperimentPlanner):
    """The ``baseline`` family (``VoxResSegNet`` + connected components, ``train_baseline.json``): the working
    spacing, patch and batch by the same rules as ours, so the two see the data at one grid; its schedule stays the
    config's (epochs)."""

    family = "baseline"
    model = VoxResSegNet


BOUNDARY_ITERATION_SHARE = 0.4  # of the detector's planned steps (``BoundaryPlanner.iterations``)


class BoundaryPlanner(ExperimentPlanner):
    """The ``boundary`` family (``WallMapNet``: a wall map + seeded watershed, ``train_boundary.json``): a finer grid
    than the detector's, so a wall stays at least a voxel across (the median cell about ``target_object_voxels``:
    a 15 µm box at ~0.32 µm in-plane, where a 0.3 µm wall blurred by the microscope measures ~0.4 µm), and crops of
    at least 1.5 large cells (a wall map is local: one cell and its neighbours' walls), and a shorter schedule.

    The target is there to stop a coarser grid from erasing walls; it does not ask for detail the microscope did not
    record, so no axis is planned finer than half its native spacing (``max_upsample``). Measured on the membrane
    generator imaged at 0.8 x 0.8 x 2 µm (cells ~20 x 20 x 7 voxels; seed 0, default command): the target alone
    planned 0.275 x 0.275 x 0.5 µm, Det F1 0.682 in 6.2 min; at most 2x gave 0.4 x 0.4 x 1 µm, Det F1 0.892 in
    1.7 min; native 0.806 (``scripts/boundary_spacing.py``). At 0.4 x 0.4 x 1 µm the rule changes nothing (z 1.6x,
    Det F1 0.940; native z 0.919)."""

    family = "boundary"
    model = WallMapNet
    target_object_voxels = (48.0, 48.0, 24.0)
    keep_band = ((36.0, 72.0), (36.0, 72.0), (18.0, 40.0))
    patch_objects_across = 1.5
    max_upsample = 2.0

    def iterations(self, epochs: int | None = None) -> int:
        """A shorter schedule than the detector's: ``BOUNDARY_ITERATION_SHARE`` of it, at least 600 steps.

        Measured on the membrane preset (validation Det F1 every 400 steps of the planned 2000, seed 0): it peaks at
        400-800 steps (0.876-0.886) and falls after (0.65 at 2000), as the model grows confident that dark voxels
        are interior and neighbouring cores merge across faint walls; 800 steps with the learning rate annealed over
        them gave test Det F1 0.871 (the best-of-2000 checkpoint 0.866) in 40% of the time."""
        if epochs is not None:
            return super().iterations(epochs)
        steps = max(600, int(BOUNDARY_ITERATION_SHARE * plan_iterations(self.fingerprint)))
        return steps // 100 * 100

    def object_um(self) -> list[float]:
        """The median training object (x, y, z) µm: the model's blockwise halo and face mirror."""
        return [float(v) for v in self.fingerprint.object_um_median]

    def planned(self, mask_fraction: float | None = None) -> dict:
        common = super().planned(mask_fraction)
        iterations = self.iterations()
        return {
            **common,
            "iterations": iterations,
            "val_interval": self.val_interval(iterations),
            "object_um": self.object_um(),
        }


def planner_for(family: str) -> type[ExperimentPlanner]:
    """The planner class of a registered ``family`` (``ModelFamily.planner``, a dotted path)."""
    path = get_family(family).planner
    if not path:
        raise ValueError(f"model family {family!r} has no planner")
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def check_used(used: Mapping[str, object], divisors: Sequence[int] = SIZE_DIVISOR) -> dict:
    """The plan values a run uses, checked before anything is built: a bad command-line value fails here naming
    its flag (``--iterations 0`` used to end in Ignite's "Argument max_epochs is invalid", ``--val_interval 0`` in a
    ZeroDivisionError)."""
    checked = dict(used)
    for key in ("iterations", "val_interval", "batch_size"):
        if key in checked:
            checked[key] = as_count(checked[key], f"--{key}")
    if "patch_size" in checked:
        patch = as_size(checked["patch_size"], "--patch_size")
        if any(p % d for p, d in zip(patch, divisors)):
            raise ValueError(f"--patch_size must be a multiple of {list(divisors)} (x, y, z), got {list(patch)}")
        checked["patch_size"] = list(patch)
    if "working_spacing" in checked:
        try:
            checked["working_spacing"] = list(as_spacing(checked["working_spacing"]))
        except (TypeError, ValueError):
            raise ValueError(
                f"--working_spacing must be three positive numbers (x, y, z) in µm, got {checked['working_spacing']!r}"
            ) from None
    if checked.get("mask_fraction") is not None:
        checked["mask_fraction"] = as_fraction(checked["mask_fraction"], "--mask_fraction")
    return checked


def data_warnings(fingerprint: DatasetFingerprint, family: str = "nuclei") -> list[str]:
    """What the fingerprint says about training ``family`` on this data (logged at training start and by ``plan``):
    the data asks for another family, or its two stain features disagree."""
    choice = plan_family(fingerprint)
    warnings_ = []
    if family in ("nuclei", "boundary") and choice["family"] != family:
        warnings_.append(
            f"this run trains the '{family}' family, but the data looks like the '{choice['family']}' family's: "
            f"{choice['why']}. The default train.json picks the family itself; --family {family} forces this one "
            "(the model card says which family suits which stain)"
        )
    elif not choice["agrees"]:
        warnings_.append(f"the family choice is uncertain: {choice['why']}")
    return warnings_


def _differs(a: object, b: object) -> bool:
    try:
        return not np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    except (TypeError, ValueError):
        return a != b


def format_plan(report: Mapping) -> str:
    """Fingerprint and plan as a two-column text table."""
    fp = report["fingerprint"]
    rows = [
        ("model family", report.get("family") or "-"),
        ("family chosen by the data", _family_choice(report.get("family_choice"))),
        ("training volumes / validation", f"{fp['n_volumes']} / {fp['n_validation']}"),
        ("objects (with masks)", f"{fp['n_objects']} ({fp['n_masked']})"),
        ("native spacing µm (x, y, z)", fp["spacing_um"]),
        ("volume voxels (median)", fp["volume_voxels"]),
        ("object size µm median", fp["object_um_median"]),
        ("object size µm p10 / p90", f"{fp['object_um_p10']} / {fp['object_um_p90']}"),
        ("box overlap p95 (IoU)", fp["box_overlap_p95"]),
        ("object volume fraction", fp["object_volume_fraction"]),
        ("intensity dtype, p1 / p50 / p99.8", _intensity(fp["intensity"])),
        ("object core contrast / core - rim", _pair(fp, "object_core_contrast", "object_core_rim_contrast")),
        ("objects cut by a face / sizes from", f"{fp.get('n_face_cut', 0)} / {fp.get('object_sizes_from', 'all')}"),
    ]
    overridden = set(report.get("overridden", []))
    for key, value in report["used"].items():
        mark = " (overridden; planned " + json.dumps(report["planned"][key]) + ")" if key in overridden else ""
        rows.append((key, f"{json.dumps(value)}{mark}"))
    coverage = report.get("anchor_coverage")
    if coverage:
        shares = " / ".join(_share(coverage.get(k)) for k in ("face_cut", "whole"))
        rows.append(("anchored boxes, face-cut / whole", shares))
        rows.append(("anchored face-cut boxes, faces mirrored", _share(coverage.get("face_cut_mirrored"))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _pair(fp: Mapping, first: str, second: str) -> str:
    return f"{fp.get(first)} / {fp.get(second)}"


def _family_choice(choice: Mapping | None) -> str:
    if not choice:
        return "-"
    margin = "" if choice.get("margin") is None else f" (margin {choice['margin']:.3f})"
    return f"{choice['family']}{margin}: {choice['why']}"


def _share(value: float | None) -> str:
    return "none" if value is None else f"{100 * value:.1f}%"


def _intensity(stats: Mapping) -> str:
    return f"{','.join(stats['dtype'])}, {stats['p1']:.4g} / {stats['p50']:.4g} / {stats['p99.8']:.4g}"
