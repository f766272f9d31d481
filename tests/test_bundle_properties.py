"""MONAI's own bundle property checks (what the model zoo's CI runs) on the three workflows, with the real
``ConfigWorkflow``: from a copy of ``bundle/`` with zoo-style relative paths, and from the repository root."""

from __future__ import annotations

import json
import shutil

import pytest
from monai.bundle import ConfigWorkflow
from monai.inferers import Inferer

from weakseg_monai.data.synthetic import write_synthetic_dataset
from weakseg_monai.inference import WeakSegInferer

from .conftest import BUNDLE_DIR, REPO_ROOT

WORKFLOWS = {
    "train": (["train.json"], "train"),
    "inference": (["inference.json"], "infer"),
    "evaluate": (["train.json", "evaluate.json"], "infer"),
    "baseline": (["train.json", "train_baseline.json"], "train"),
    "baseline_inference": (["inference.json", "inference_baseline.json"], "infer"),
}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("properties_data")
    write_synthetic_dataset(out, n_train=1, n_val=1, n_test=1, shape=(48, 48, 16), n_cells=(3, 5), seed=2)
    return out


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory):
    """``bundle/`` copied alone, under the bundle's zoo name."""
    root = tmp_path_factory.mktemp("zoo") / "weakseg_nuclei_3d"
    shutil.copytree(BUNDLE_DIR, root, ignore=shutil.ignore_patterns("runs", "data"))
    return root


def _checked(configs: list[str], workflow_type: str, config_dir: str, **overrides) -> ConfigWorkflow:
    files = [f"{config_dir}/{name}" for name in configs]
    workflow = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=f"{config_dir}/metadata.json",
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    assert workflow.check_properties() == [], configs
    return workflow


def _overrides(name: str, dataset, output) -> dict:
    if name == "baseline_inference":
        return {"output_dir": str(output), "ckpt_dir": str(output / "models")}
    if name == "inference":
        return {"output_dir": str(output)}  # its dataset_dir default: the bundle's sample folder
    return {"dataset_dir": str(dataset), "output_dir": str(output), "ckpt_dir": str(output / "models"),
            "patch_size": [48, 48, 16], "iterations": 2, "val_interval": 2}


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_property_checks_pass_from_inside_a_copy_of_the_bundle(name, bundle_copy, small_dataset, tmp_path, monkeypatch):
    configs, workflow_type = WORKFLOWS[name]
    monkeypatch.chdir(bundle_copy)
    workflow = _checked(configs, workflow_type, "configs", **_overrides(name, small_dataset, tmp_path))
    if workflow_type == "infer":
        inferer = workflow.inferer
        assert isinstance(inferer, WeakSegInferer) and isinstance(inferer, Inferer)
        assert workflow.evaluator.inferer is inferer and workflow.evaluator.prepare_batch is not None
    else:
        assert isinstance(workflow.train_inferer, Inferer)
        assert workflow.evaluator.inferer is workflow.parser.get_parsed_content("validate#inferer")


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_property_checks_pass_from_the_repository_root(name, small_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    configs, workflow_type = WORKFLOWS[name]
    overrides = _overrides(name, small_dataset, tmp_path)
    _checked(configs, workflow_type, "bundle/configs", bundle_root="bundle", **overrides)


def test_a_missing_required_property_is_reported(small_dataset, tmp_path):
    """The check has teeth: without ``train#inferer`` MONAI refuses the training workflow."""
    config = json.loads((BUNDLE_DIR / "configs" / "train.json").read_text())
    del config["train"]["inferer"]
    config["train"]["trainer"].pop("inferer")
    (tmp_path / "train.json").write_text(json.dumps(config))
    workflow = ConfigWorkflow(
        config_file=str(tmp_path / "train.json"),
        meta_file=str(BUNDLE_DIR / "configs" / "metadata.json"),
        workflow_type="train",
        **_overrides("train", small_dataset, tmp_path),
    )
    workflow.initialize()
    with pytest.raises(KeyError, match="train_inferer"):
        workflow.check_properties()


def test_inference_dataset_dir_and_input_dir_are_one_setting(tmp_path):
    """``input_dir`` stays an alias of the zoo's ``dataset_dir``: either flag picks the inputs."""
    sample = str(BUNDLE_DIR / "sample")
    for flag in ("dataset_dir", "input_dir"):
        workflow = ConfigWorkflow(
            config_file=str(BUNDLE_DIR / "configs" / "inference.json"),
            workflow_type="infer",
            bundle_root=str(tmp_path),
            output_dir=str(tmp_path / "out"),
            **{flag: sample},
        )
        workflow.initialize()
        assert [d["image"] for d in workflow.dataset.data] == [sample + "/sample_000.nii.gz"], flag
    assert workflow.parser.get_parsed_content("ckpt_path") == str(tmp_path) + "/models/model.pt"


def test_inference_spacing_and_block_size_stay_top_level_ids(tmp_path):
    """``--spacing`` reaches the loader and ``--block_size`` the inferer that the workflow composes."""
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE_DIR / "configs" / "inference.json"),
        workflow_type="infer",
        bundle_root=str(BUNDLE_DIR),
        output_dir=str(tmp_path),
        spacing=[0.2, 0.2, 0.5],
        block_size=[64, 64, 16],
    )
    workflow.initialize()
    item = workflow.dataset[0]
    assert item["spacing"] == (0.2, 0.2, 0.5) and item["image"].shape[0] == 1
    assert workflow.evaluator.inferer.predictor_for(workflow.evaluator.network).block_size == (64, 64, 16)
