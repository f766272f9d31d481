"""Model families: a third family registered from this file alone runs through every inference path, and the
family a checkpoint names is the one that loads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import run
from scipy import ndimage
from torch import nn

from weakseg_monai import load_model
from weakseg_monai.data.io import read_volume
from weakseg_monai.data.synthetic import generate_stack
from weakseg_monai.engines.checkpoints import checked_checkpoint
from weakseg_monai.engines.handlers import plain_state_dict
from weakseg_monai.families import InstanceModel, ModelFamily, checkpoint_family, family_ids, register_family
from weakseg_monai.inference import WeakSegPredictor
from weakseg_monai.metrics import segmentation_f1
from weakseg_monai.networks import VoxResSegNet, WeakInstanceSegNet
from weakseg_monai.networks.postprocess import label_masks, objects_from_labels

BUNDLE_DIR = Path(__file__).resolve().parents[1] / "bundle"


class Shift(nn.Module):
    """The toy family's dense network: ``image - level`` (one learnable number)."""

    def __init__(self) -> None:
        super().__init__()
        self.level = nn.Parameter(torch.tensor(0.5))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images - self.level


class ThresholdComponents(InstanceModel):
    """A third family: intensity threshold + 6-connected components, known to nothing outside this file."""

    family = "toy-threshold"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("working_spacing", torch.tensor([0.5, 0.5, 1.0]))
        self.register_buffer("intensity_percentiles", torch.tensor([1.0, 99.8]))
        self.shift = Shift()

    def size_divisor(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def grid_multiple(self) -> tuple[int, int, int]:
        return (1, 1, 1)  # no snapping: at the working spacing every block keeps its voxels

    def dense_network(self) -> nn.Module:
        return self.shift

    def find_objects(self, dense, spatial, region=None):
        return [objects_from_labels(ndimage.label(d[0].cpu().numpy() > 0)[0]) for d in dense]

    def object_masks(self, dense, index, found, keep):
        return label_masks(found, keep)

    def block_halo(self):
        return (16.0, 16.0, 8.0)


register_family(ModelFamily("toy-threshold", ThresholdComponents))


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "model.pt"
    torch.save(plain_state_dict(ThresholdComponents()), path)
    return path


def test_a_family_registered_from_its_own_module_loads_from_its_checkpoint(toy_checkpoint):
    assert {"nuclei", "baseline", "toy-threshold"} <= set(family_ids())
    state = torch.load(toy_checkpoint, weights_only=True)
    assert checkpoint_family(state) == "toy-threshold"
    model = load_model(toy_checkpoint)
    assert type(model) is ThresholdComponents and not model.training


def test_the_toy_family_gives_the_same_instances_whole_and_block_by_block(toy_checkpoint):
    image, labels = generate_stack([2, 0, 0])  # a small synthetic stack, (X, Y, Z) at 0.5 x 0.5 x 1 µm
    image = torch.as_tensor(image, dtype=torch.float32)[None]
    model = load_model(toy_checkpoint)
    whole = WeakSegPredictor(model)(image, (0.5, 0.5, 1.0))
    assert len(whole["boxes"]) == int(whole["instances"].max()) > 0
    assert segmentation_f1(labels, whole["instances"], 0.5)["tp"] > 0  # it finds nuclei, not noise
    small = int(np.prod(image.shape[1:])) // 4  # forces the blockwise path
    blocks = WeakSegPredictor(model, max_whole_voxels=small, block_size=(40, 40, 12))(image, (0.5, 0.5, 1.0))
    assert len(blocks["boxes"]) == len(whole["boxes"])
    same = segmentation_f1(whole["instances"], blocks["instances"], 0.99)
    assert same["f1"] == 1.0, same


def test_inference_json_runs_the_toy_family_with_only_its_ckpt_path(toy_checkpoint, tmp_path):
    run(
        run_id="inference",
        config_file=str(BUNDLE_DIR / "configs" / "inference.json"),
        bundle_root=str(BUNDLE_DIR),
        ckpt_path=str(toy_checkpoint),
        output_dir=str(tmp_path),
    )
    found = read_volume(tmp_path / "sample_000_instances.nii.gz")
    expected = read_volume(BUNDLE_DIR / "sample" / "sample_000.nii.gz")
    assert found.shape == expected.shape and found.max() > 0


def test_a_checkpoint_of_one_family_is_refused_by_another_and_old_files_load_as_nuclei(tmp_path):
    baseline = tmp_path / "baseline.pt"
    torch.save(plain_state_dict(VoxResSegNet()), baseline)
    assert type(load_model(baseline)) is VoxResSegNet
    with pytest.raises(ValueError, match="'baseline' model, not 'nuclei'.*load_model"):
        checked_checkpoint(baseline, WeakInstanceSegNet())
    legacy = {k: v for k, v in plain_state_dict(WeakInstanceSegNet()).items() if k != "family_code"}
    torch.save(legacy, tmp_path / "legacy.pt")
    assert type(load_model(tmp_path / "legacy.pt")) is WeakInstanceSegNet
    old_baseline = {k: v for k, v in plain_state_dict(VoxResSegNet()).items() if k != "family_code"}
    VoxResSegNet().load_state_dict(old_baseline)  # a baseline file from before families, loaded by its class
