"""Model-zoo-style unit test of the weakseg_nuclei_3d bundle: train a few iterations with overrides, evaluate, infer,
each through MONAI's ``ConfigWorkflow`` as the zoo's ``ci/unit_tests/test_<bundle>.py`` files do.

``python -m weakseg_monai export-bundle OUT`` writes this file to ``OUT/ci/unit_tests/test_weakseg_nuclei_3d.py``
beside ``OUT/weakseg_nuclei_3d/``; in the model zoo's tree it runs from the zoo's root with
``python ci/unit_tests/runner.py --b weakseg_nuclei_3d`` on ``models/weakseg_nuclei_3d``. In this repository it is part
of the pytest suite and runs on ``bundle/`` with the package installed. ``WEAKSEG_BUNDLE_ROOT`` names another bundle
folder. Outputs and checkpoints go to a temporary folder: the bundle's own ``models/model.pt`` stays as shipped.
"""

import json
import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

from monai.bundle import ConfigWorkflow

NAME = "weakseg_nuclei_3d"


def bundle_root() -> str:
    """The bundle under test: ``$WEAKSEG_BUNDLE_ROOT``, the zoo's ``models/<name>``, a folder beside ``ci/`` (an
    ``export-bundle`` output), or this repository's ``bundle/``."""
    here = Path(__file__).resolve()
    candidates = [os.environ.get("WEAKSEG_BUNDLE_ROOT", ""), f"models/{NAME}", here.parents[2] / NAME]
    candidates.append(here.parents[1] / "bundle")
    for candidate in candidates:
        if candidate and (Path(candidate) / "configs" / "metadata.json").is_file():
            return str(Path(candidate).resolve())
    raise FileNotFoundError(f"no {NAME} bundle found (set WEAKSEG_BUNDLE_ROOT)")


BUNDLE_ROOT = bundle_root()
if os.path.isdir(os.path.join(BUNDLE_ROOT, "weakseg_monai")):
    sys.path.insert(0, BUNDLE_ROOT)  # the bundle's own code (an exported bundle carries it), as the zoo's tests do


def config(name: str) -> str:
    return os.path.join(BUNDLE_ROOT, "configs", name)


def workflow(workflow_type: str, configs: list[str], **override) -> ConfigWorkflow:
    files = [config(c) for c in configs]
    return ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=files if len(files) > 1 else files[0],
        logging_file=config("logging.conf"),
        meta_file=config("metadata.json"),
        bundle_root=BUNDLE_ROOT,
        **override,
    )


def run(flow: ConfigWorkflow, check_properties: bool) -> None:
    flow.initialize()
    if check_properties:
        missing = flow.check_properties()
        if missing:
            raise AssertionError(f"bundle properties missing: {missing}")
    flow.run()
    flow.finalize()


def test_order(name1: str, name2: str) -> int:
    """train, then evaluate, then infer (the zoo's runner sorts test methods with this)."""

    def order(name: str) -> int:
        return 1 if "train" in name else 2 if "eval" in name else 3 if "infer" in name else 4

    return order(name1) - order(name2)


test_order.__test__ = False  # a sort key for the zoo's runner, not a test for pytest


class TestWeaksegNuclei3d(unittest.TestCase):
    def setUp(self):
        from weakseg_monai.data.synthetic import write_synthetic_dataset  # the bundle's own generator

        self.work = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.work, "data")
        write_synthetic_dataset(self.dataset_dir, n_train=1, n_val=1, n_test=1, shape=(48, 48, 16), n_cells=(3, 5))

    def tearDown(self):
        shutil.rmtree(self.work)

    def test_train_eval_config(self):
        ckpt_dir = os.path.join(self.work, "models")
        override = {
            "dataset_dir": self.dataset_dir,
            "output_dir": os.path.join(self.work, "train"),
            "ckpt_dir": ckpt_dir,
            "iterations": 2,
            "val_interval": 2,
            "patch_size": [48, 48, 16],
        }
        run(workflow("train", ["train.json"], **override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(ckpt_dir, "model.pt")), "training writes ckpt_dir/model.pt")

        override["output_dir"] = os.path.join(self.work, "evaluate")
        run(workflow("train", ["train.json", "evaluate.json"], **override), check_properties=False)
        metrics = json.loads(Path(override["output_dir"], "metrics.json").read_text())
        self.assertEqual([row["id"] for row in metrics["items"]], ["test_000"])

    def test_infer_config(self):
        output_dir = os.path.join(self.work, "inference")
        run(workflow("infer", ["inference.json"], output_dir=output_dir), check_properties=True)
        written = sorted(os.listdir(output_dir))
        self.assertIn("sample_000_instances.nii.gz", written)
        self.assertIn("sample_000_boxes.json", written)


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    unittest.main(testLoader=loader)
