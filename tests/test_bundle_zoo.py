"""The bundle as the model zoo ships it: exported alone (``export-bundle``), our wheel installed into a fresh
virtual environment beside the registry packages, and run from inside its own folder with zoo-style relative
paths: inference, one short training (which updates its ``models/model.pt``) and evaluation."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

import pytest

from weakseg_monai.data.synthetic import write_synthetic_dataset
from weakseg_monai.utils.zoo import export_bundle

from .conftest import BUNDLE_DIR, REPO_ROOT

NAME = "weakseg_nuclei_3d"
SOURCE = ("pyproject.toml", "README.md", "LICENSE", "weakseg_monai")


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout[-2000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def zoo_python(tmp_path_factory) -> Path:
    """A fresh venv (``--system-site-packages``: torch, MONAI & co. are reused, nothing is downloaded) holding
    only our wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    for entry in SOURCE:
        path = REPO_ROOT / entry
        if path.is_dir():
            shutil.copytree(path, source / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (source / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / entry)
    # with setuptools at hand, build without isolation (an isolated build downloads setuptools)
    isolation = ["--no-build-isolation"] if _has("setuptools") else []
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, ".", "-w", str(work)], source)
    wheels = sorted(work.glob("weakseg_monai-*.whl"))
    if built.returncode != 0 or not wheels:
        pytest.skip(f"cannot build the project's wheel here (pip wheel failed): {_tail(built)[-500:]}")
    env_dir = work / "venv"
    try:
        venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot create a virtual environment with pip here: {err}")
    python = env_dir / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])], work)
    if installed.returncode != 0:
        pytest.skip(f"cannot install the wheel into a fresh virtual environment: {_tail(installed)[-500:]}")
    where = _run([str(python), "-c", "import weakseg_monai; print(weakseg_monai.__file__)"], work)
    assert where.returncode == 0 and str(env_dir) in where.stdout, "the venv must import the wheel, not the checkout"
    return python


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_the_exported_bundle_runs_alone_from_inside_its_folder(zoo_python, tmp_path):
    bundle = export_bundle(tmp_path / "zoo", BUNDLE_DIR)
    assert bundle.name == NAME and not (bundle / "runs").exists()
    data = tmp_path / "data"
    write_synthetic_dataset(data, n_train=1, n_val=1, n_test=1, shape=(48, 48, 16), n_cells=(3, 5), seed=3)
    bundle_run = [str(zoo_python), "-m", "monai.bundle", "run"]

    inference = _run([*bundle_run, "inference", "--config_file", "configs/inference.json"], bundle)
    assert inference.returncode == 0, _tail(inference)
    labels = bundle / "runs" / "inference" / "sample_000_instances.nii.gz"
    assert labels.is_file(), "inference writes under the bundle's own runs/ folder"

    shipped = hashlib.md5((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    training = _run(
        [*bundle_run, "training", "--config_file", "configs/train.json", "--dataset_dir", str(data),
         "--iterations", "2", "--val_interval", "2", "--patch_size", "[48,48,16]"],
        bundle,
    )
    assert training.returncode == 0, _tail(training)
    trained = hashlib.md5((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert trained != shipped, "fine-tuning the bundle updates its models/model.pt (zoo ckpt_dir)"

    evaluation = _run(
        [*bundle_run, "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
         "--dataset_dir", str(data)],
        bundle,
    )
    assert evaluation.returncode == 0, _tail(evaluation)
    metrics = json.loads((bundle / "runs" / "evaluate" / "metrics.json").read_text())
    assert [row["id"] for row in metrics["items"]] == ["test_000"]


def test_export_refuses_to_overwrite_and_names_the_folder_after_the_bundle(tmp_path):
    target = export_bundle(tmp_path, BUNDLE_DIR)
    assert target == tmp_path / NAME
    assert (target / "models" / "model.pt").read_bytes() == (BUNDLE_DIR / "models" / "model.pt").read_bytes()
    assert sorted(p.name for p in (target / "models").iterdir()) == ["model.pt"]
    with pytest.raises(FileExistsError):
        export_bundle(tmp_path, BUNDLE_DIR)
    required = json.loads((target / "configs" / "metadata.json").read_text())["required_packages_version"]
    assert required["weakseg-monai"] == version("weakseg-monai"), "metadata declares the package the configs import"
