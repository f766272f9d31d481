"""The real bundle through MONAI's bundle machinery: metadata, train + resume, evaluate, inference."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow, verify_metadata

from weakseg_monai.data.instances import boxes_from_instances
from weakseg_monai.data.io import read_volume, resolve_spacing, write_volume
from weakseg_monai.data.synthetic import NucleusModel, generate_stack, write_synthetic_dataset
from weakseg_monai.inference import WeakSegPredictor, run_inference
from weakseg_monai.metrics import detection_f1
from weakseg_monai.networks import WeakInstanceSegNet

from .conftest import BUNDLE_DIR, run_cli

CONFIGS = BUNDLE_DIR / "configs"
SHIPPED = BUNDLE_DIR / "models" / "model.pt"


@pytest.fixture(scope="module")
def tiny_bundle_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle_data")
    write_synthetic_dataset(out, n_train=2, n_val=1, n_test=1, shape=(64, 64, 16), n_cells=(4, 8), seed=1)
    return out


def _workflow(config: str | list[str], **overrides) -> ConfigWorkflow:
    """``config``: one file of ``bundle/configs``, or several merged in order (``train.json`` + an override)."""
    files = [str(CONFIGS / name) for name in ([config] if isinstance(config, str) else config)]
    workflow = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=None,
        **overrides,
    )
    workflow.initialize()
    return workflow


def shipped_model() -> WeakInstanceSegNet:
    model = WeakInstanceSegNet()
    model.load_state_dict(torch.load(SHIPPED, map_location="cpu", weights_only=True))
    return model.eval()


def test_metadata_verifies_offline_and_the_schema_has_teeth(tmp_path):
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(CONFIGS / "metadata_schema.json"))
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    del broken["network_data_format"]
    (tmp_path / "meta.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "meta.json"), filepath=str(CONFIGS / "metadata_schema.json"))


@pytest.mark.slow
def test_train_resume_then_evaluate(tiny_bundle_data, tmp_path):
    common = dict(bundle_root=str(tmp_path), dataset_dir=str(tiny_bundle_data), patch_size=[48, 48, 16], val_interval=2)
    first = _workflow("train.json", iterations=4, **common)
    first.run()
    trainer = first.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 4, "training length is counted in optimizer steps"
    models = tmp_path / "models"  # ckpt_dir: bundle_root/models, where inference reads model.pt
    assert (models / "checkpoint_epoch=2.pt").is_file(), "a checkpoint every val_interval iterations"
    for name in ("model.pt", "model_final.pt"):  # always a usable model, whatever validation said
        WeakInstanceSegNet().load_state_dict(torch.load(models / name, weights_only=True))
    plan = json.loads((tmp_path / "runs" / "train" / "plan.json").read_text())
    assert plan["used"]["iterations"] == 4 and "iterations" in plan["overridden"]
    assert plan["fingerprint"]["n_volumes"] == 2
    first.finalize()

    not_resumed = _workflow("train.json", resume="false", **common)  # the word the command line passes
    assert not_resumed.parser.get_parsed_content("train#checkpoint_loader#load_path") == "", "--resume false resumed"

    resumed = _workflow("train.json", iterations=6, resume="true", run_id="training", **common)  # the zoo's run id
    trainer = resumed.parser.get_parsed_content("train#trainer")
    iterations_run = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations_run.append(e.state.iteration))
    resumed.run()
    assert iterations_run == [5, 6], "a resumed run continues where the saved one stopped"
    resumed.finalize()

    evaluation = _workflow(
        ["train.json", "evaluate.json"],
        run_id="evaluating",
        bundle_root=str(tmp_path),
        dataset_dir=str(tiny_bundle_data),
    )  # reads the model.pt training left in bundle_root/models
    evaluation.run()
    metrics = json.loads((tmp_path / "runs" / "evaluate" / "metrics.json").read_text())
    assert [row["id"] for row in metrics["items"]] == ["test_000"]
    assert {"det_f1", "seg_f1", "mean_matched_iou", "ctc_seg", "ctc_det"} <= set(metrics["mean"])
    assert (tmp_path / "runs" / "evaluate" / "metrics.md").read_text().count("test_000") == 1


def test_main_job_inference_on_the_shipped_sample(tmp_path):
    """The README's main job: the shipped model on the shipped sample, outputs in the input's geometry."""
    result = run_cli(
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(CONFIGS / "inference.json"),
        "--bundle_root",
        str(BUNDLE_DIR),
        "--output_dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sample = BUNDLE_DIR / "sample" / "sample_000.nii.gz"
    labels_path = tmp_path / "sample_000_instances.nii.gz"
    assert nib.load(str(labels_path)).shape == nib.load(str(sample)).shape
    declared = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]["post_processed_outputs"]
    assert str(nib.load(str(labels_path)).get_data_dtype()) == declared["instances"]["dtype"], "metadata: as written"
    np.testing.assert_allclose(nib.load(str(labels_path)).affine, nib.load(str(sample)).affine)
    boxes = json.loads((tmp_path / "sample_000_boxes.json").read_text())
    assert len(boxes["boxes"]) == len(boxes["scores"]) == int(read_volume(labels_path).max())
    assert (tmp_path / "sample_000_preview.png").read_bytes()[:4] == b"\x89PNG"
    gt = read_volume(BUNDLE_DIR / "sample_gt" / "sample_000_gt.nii.gz")
    score = detection_f1(boxes_from_instances(gt), boxes["boxes"])
    assert score["f1"] > 0.8, score


@pytest.mark.parametrize("mask_context", [0.0, 0.25])
def test_blocks_give_no_split_or_duplicate_cell_at_the_seam_and_match_the_whole_volume(mask_context):
    """Two blocks along x (cores [0, 80) and [80, 160)); the nuclei crossing the seam are found once, and the
    blockwise labels agree with the whole-volume ones (also when masks live in grown frames, mask_context)."""
    from weakseg_monai.metrics import segmentation_f1

    image, instances = generate_stack([11], shape=(160, 96, 32), model=NucleusModel(n_cells=(25, 30)))
    gt_boxes = boxes_from_instances(instances)
    model = shipped_model()
    model.mask_context.fill_(mask_context)
    x = torch.from_numpy(image.astype(np.float32))[None]
    whole = WeakSegPredictor(model)(x, (0.5, 0.5, 1.0))
    blocks = WeakSegPredictor(model, block_size=(80, 96, 32), max_whole_voxels=1)(x, (0.5, 0.5, 1.0))
    seam = [k for k, b in enumerate(gt_boxes) if b[0] < 80 < b[3]]
    assert seam, "the test volume needs a nucleus across the seam"
    pred = torch.as_tensor(blocks["boxes"])
    assert detection_f1(gt_boxes[seam], blocks["boxes"])["recall"] >= detection_f1(gt_boxes[seam], whole["boxes"])[
        "recall"
    ]
    from monai.data.box_utils import box_iou

    pairwise = box_iou(pred, pred) - torch.eye(len(pred))
    assert pairwise.max() < 0.5, "duplicate detections at the seam"
    assert detection_f1(gt_boxes, blocks["boxes"])["f1"] >= detection_f1(gt_boxes, whole["boxes"])["f1"] - 0.03
    agreement = segmentation_f1(whole["instances"], blocks["instances"], 0.5)
    assert agreement["f1"] >= 0.95 and agreement["mean_matched_iou"] >= 0.85, agreement


def test_bad_inputs_fail_clearly_and_leave_no_output(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "broken.nii.gz").write_bytes(b"not an image")
    nib.save(nib.Nifti1Image(np.zeros((32, 32), dtype=np.float32), np.eye(4)), str(inputs / "flat.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 8, 3), dtype=np.float32), np.eye(4)), str(inputs / "rgb.nii.gz"))
    write_volume(inputs / "good.nii.gz", np.zeros((32, 32, 8), dtype=np.uint16), (0.5, 0.5, 1.0))
    with pytest.raises(RuntimeError) as err:
        run_inference(WeakSegPredictor(shipped_model()), inputs, outputs, preview=False)
    message = str(err.value)
    assert "3 of 4 inputs failed" in message
    assert "broken.nii.gz" in message and "cannot be read" in message
    assert "flat.nii.gz" in message and "single-channel 3D" in message
    assert "rgb.nii.gz" in message and "several channels" in message
    assert sorted(p.name for p in outputs.iterdir()) == ["good_boxes.json", "good_instances.nii.gz"]


@pytest.mark.slow
def test_multi_gpu_config_runs_ddp_on_cpu_with_gloo(tiny_bundle_data, tmp_path):
    """torchrun, 2 processes, gloo backend, 1 short epoch; checkpoints hold plain (unwrapped) weights."""
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    result = run_cli(
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--bundle_root",
        str(tmp_path),
        "--dataset_dir",
        str(tiny_bundle_data),
        "--iterations",
        "2",
        "--val_interval",
        "2",
        "--patch_size",
        "[48,48,16]",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert "anchor_shapes" in state["model"] and not any(k.startswith("module.") for k in state["model"])
    WeakInstanceSegNet().load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True))


def test_ckpt_export_scripts_the_dense_network(tmp_path):
    from monai.bundle import ckpt_export

    ckpt_export(
        net_id="export_network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(SHIPPED),
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        bundle_root=str(BUNDLE_DIR),
    )
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.rand(1, 1, 32, 32, 16)
    eager = shipped_model().network(x)
    outputs = scripted(x)
    declared = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]["outputs"]
    assert isinstance(outputs, tuple) and list(declared) == ["cls_logits", "box_regression", "fine", "coarse"]
    sizes = {"x": 32, "y": 32, "z": 16}
    for value, (key, spec) in zip(outputs, declared.items(), strict=True):
        assert torch.allclose(value, eager[key], atol=1e-5), key
        assert value.shape[1] == spec["num_channels"], key  # metadata says what the export really returns
        assert list(value.shape[2:]) == [eval(e, {}, sizes) for e in spec["spatial_shape"]], key


def test_the_shipped_model_pt_holds_every_entry_of_the_models_state_dict():
    shipped = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert sorted(shipped) == sorted(WeakInstanceSegNet().state_dict()), "re-save model.pt with every entry"
    model = WeakInstanceSegNet()
    model.load_state_dict(shipped)  # strict; the head takes the plan's anchor count from the checkpoint
    assert len(shipped["anchor_shapes"]) == model.network.head.num_anchors


def test_the_bundle_ships_its_model_files_itself_and_the_torchscript_matches_the_weights():
    """No download step (no large_files.yml, no placeholder URL): model.pt and the TorchScript export of its dense
    network (``models/model.ts``, made by ``ckpt_export --net_id export_network_def``) ship in the bundle."""
    from weakseg_monai.utils.zoo import ZOO_MAX_FILE_BYTES

    assert not list(BUNDLE_DIR.glob("large_files.*"))
    scripted_path = BUNDLE_DIR / "models" / "model.ts"
    for path in (SHIPPED, scripted_path):
        assert path.stat().st_size < ZOO_MAX_FILE_BYTES
    scripted = torch.jit.load(str(scripted_path))
    x = torch.rand(1, 1, 32, 32, 16)
    eager = shipped_model().network(x)
    for value, key in zip(scripted(x), ("cls_logits", "box_regression", "fine", "coarse"), strict=True):
        assert torch.allclose(value, eager[key], atol=1e-5), f"models/model.ts is stale ({key}): re-export it"


def test_train_json_tells_the_calibrator_when_it_validates_on_training_volumes(tiny_bundle_data, tmp_path):
    """``seen_data`` follows the datalist: False with a validation section, True without one."""
    held_out = _workflow("train.json", bundle_root=str(tmp_path / "a"), dataset_dir=str(tiny_bundle_data))
    assert held_out.parser.get_parsed_content("validate#handlers#0").seen_data is False
    no_validation = tmp_path / "data"
    shutil.copytree(tiny_bundle_data, no_validation)
    datalist = json.loads((no_validation / "datalist.json").read_text())
    datalist.pop("validation")
    (no_validation / "datalist.json").write_text(json.dumps(datalist))
    seen = _workflow("train.json", bundle_root=str(tmp_path / "b"), dataset_dir=str(no_validation))
    assert seen.parser.get_parsed_content("validate#handlers#0").seen_data is True


@pytest.mark.slow
def test_baseline_configs_train_on_k_stacks_and_infer(tiny_bundle_data, tmp_path):
    """train_baseline.json on the first k stacks with full masks, then inference_baseline.json on its model."""
    workflow = _workflow(
        ["train.json", "train_baseline.json"],  # an override of train.json
        bundle_root=str(tmp_path),
        dataset_dir=str(tiny_bundle_data),
        epochs=1,
        val_interval=1,
        n_stacks=1,
        patch_size=[48, 48, 16],
    )
    assert len(workflow.parser.get_parsed_content("train#dataset")) == 1
    workflow.run()
    workflow.finalize()
    ckpt = tmp_path / "runs" / "train_baseline" / "models" / "model.pt"
    assert ckpt.is_file() and ckpt.with_name("model_final.pt").is_file()
    plan = json.loads((tmp_path / "runs" / "train_baseline" / "plan.json").read_text())  # its own planner's
    assert plan["family"] == "baseline" and "patch_size" in plan["overridden"]
    assert plan["used"]["epochs"] == 1 and "anchor_shapes" not in plan["used"]
    result = run_cli(
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        f"['{CONFIGS / 'inference.json'}','{CONFIGS / 'inference_baseline.json'}']",  # an override of inference.json
        "--bundle_root",
        str(tmp_path),
        "--ckpt_path",
        str(ckpt),
        "--input_dir",
        str(tiny_bundle_data / "images" / "test_000.nii.gz"),
        "--output_dir",
        str(tmp_path / "out"),
        "--preview",
        "false",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    labels = read_volume(tmp_path / "out" / "test_000_instances.nii.gz")
    assert labels.shape == read_volume(tiny_bundle_data / "images" / "test_000.nii.gz").shape
    assert not (tmp_path / "out" / "test_000_preview.png").exists(), "--preview false still wrote a preview"


def test_a_failing_bundle_run_ends_with_the_real_message(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.nii.gz").write_bytes(b"not an image")
    result = run_cli(
        "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json"), "--bundle_root",
        str(BUNDLE_DIR), "--input_dir", str(inputs), "--output_dir", str(tmp_path / "out"),
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-4:]
    assert last[0] == "weakseg-monai error: RuntimeError: 1 of 1 inputs failed:", result.stderr[-1500:]
    assert last[1:3] == ["| input | result |", "|---|---|"]
    assert "broken.nii.gz" in last[3] and "cannot be read" in last[3] and last[3].count("broken.nii.gz") == 1


def test_the_named_inference_run_id_runs_the_same_job(tmp_path):
    """`python -m monai.bundle run inference ...` (the zoo's older convention) is the default `run` list."""
    workflow = _workflow("inference.json", run_id="inference", bundle_root=str(BUNDLE_DIR), output_dir=str(tmp_path))
    workflow.run()
    workflow.finalize()
    assert (tmp_path / "sample_000_instances.nii.gz").is_file() and (tmp_path / "sample_000_boxes.json").is_file()
    # the composed workflow (loader, dataset, WeakSegInferer, evaluator, writer) = the Python predictor, exactly
    sample = BUNDLE_DIR / "sample" / "sample_000.nii.gz"
    image = torch.from_numpy(read_volume(sample).astype(np.float32))[None]
    direct = WeakSegPredictor(shipped_model())(image, resolve_spacing(sample, None))
    np.testing.assert_array_equal(read_volume(tmp_path / "sample_000_instances.nii.gz"), direct["instances"])
    boxes = json.loads((tmp_path / "sample_000_boxes.json").read_text())["boxes"]
    np.testing.assert_allclose(boxes, np.round(direct["boxes"], 2), atol=1e-6)
