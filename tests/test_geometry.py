"""The default training command on odd geometries: six seeded random small datasets (every axis <= 64 voxels,
non-square in-plane, sometimes only a few slices deep, anisotropy up to 8, objects of 3-20 voxels, 1-3 volumes,
0-100% masks) and the reported 28 x 61 x 31 crop at 1 x 1 x 2 µm each plan, train two iterations and infer through
the real bundle configs, without a refusal or an error. ``scripts/geometry_sweep.py`` runs the same over larger
ranges."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigWorkflow

from weakseg_monai.data.geometry_cases import REPORTED_CASE, draw_case, write_case
from weakseg_monai.planning import BoundaryPlanner, TrainingPlanner

from .conftest import BUNDLE_DIR

CONFIGS = BUNDLE_DIR / "configs"
CASES = [draw_case(seed) for seed in range(6)] + [REPORTED_CASE]


def run_workflow(configs: list[str], workflow_type: str, **overrides) -> ConfigWorkflow:
    files = [str(CONFIGS / c) for c in configs]
    flow = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(BUNDLE_DIR),
        **overrides,
    )
    flow.initialize()
    flow.run()
    flow.finalize()
    return flow


def test_the_random_cases_cover_the_geometries_asked_for():
    shapes = [shape for case in CASES for shape in case.shapes]
    assert max(max(s) for s in shapes) <= 64 and min(min(s) for s in shapes) >= 8
    assert any(s[0] != s[1] for s in shapes) and any(s[2] <= 12 for s in shapes), "non-square, shallow"
    assert max(c.spacing[2] / c.spacing[0] for c in CASES) > 3, "strong anisotropy"
    assert {len(c.shapes) for c in CASES} >= {1, 2}
    assert min(c.mask_fraction for c in CASES) == 0.0 and max(c.mask_fraction for c in CASES) > 0.5


def train_two_steps_and_infer(data, tmp_path, configs: list[str], **overrides) -> list[str]:
    """Train two iterations with ``configs`` and run ``inference.json`` on the training images: the names written."""
    models = tmp_path / "models"
    run_workflow(
        configs,
        "train",
        dataset_dir=str(data),
        output_dir=str(tmp_path / "train"),
        ckpt_dir=str(models),
        iterations=2,
        val_interval=2,
        **overrides,
    )
    assert (models / "model.pt").is_file()
    out, model = tmp_path / "pred", str(models / "model.pt")
    run_workflow(["inference.json"], "infer", input_dir=str(data / "images"), output_dir=str(out), ckpt_path=model)
    return sorted(p.name for p in out.glob("*_instances.nii.gz"))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_default_command_plans_trains_and_infers_any_small_geometry(case, tmp_path):
    data = tmp_path / "data"
    write_case(case, data)
    planner = TrainingPlanner(data)
    planned = planner.planned()
    assert planned["patch_size"][0] == planned["patch_size"][1], "square in-plane crops: quarter turns stay valid"
    written = train_two_steps_and_infer(data, tmp_path, ["train.json"])
    assert written == [f"train_{i:03d}_instances.nii.gz" for i in range(len(case.shapes))]


@pytest.mark.slow
@pytest.mark.parametrize("case", [CASES[5], REPORTED_CASE], ids=[CASES[5].name, REPORTED_CASE.name])
def test_the_boundary_family_plans_trains_and_infers_small_geometries(case, tmp_path):
    """The ``boundary`` family forced on two of the cases (5-voxel objects at anisotropy 3.5; the reported crop):
    its grid asks for at most 2x the native detail per axis (the wall-map target alone resampled the first 8x
    in-plane and 20x in z: 190 s per crop block by block), and it trains and infers without an error."""
    data = tmp_path / "data"
    write_case(case, data)
    planner = BoundaryPlanner(data)
    zoom = [n / w for n, w in zip(planner.fingerprint.spacing_um, planner.working_spacing())]
    assert max(zoom) <= 2.0 + 1e-6, zoom
    written = train_two_steps_and_infer(data, tmp_path, ["train.json", "train_boundary.json"], family="boundary")
    assert written == [f"train_{i:03d}_instances.nii.gz" for i in range(len(case.shapes))]
