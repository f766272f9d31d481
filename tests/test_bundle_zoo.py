"""The bundle as the model zoo ships it: exported alone (``export-bundle``, carrying its code), its metadata listing
every package that code needs, its model card standing alone, and the zoo's premerge run on a fresh virtual
environment (``scripts/zoo_premerge.py``: no wheel of ours, nothing but what metadata lists)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from weakseg_monai.utils.zoo import NOT_CARRIED, export_bundle, zoo_requirements

from .conftest import BUNDLE_DIR, REPO_ROOT

NAME = "weakseg_nuclei_3d"
METADATA = json.loads((BUNDLE_DIR / "configs" / "metadata.json").read_text())
CARD = BUNDLE_DIR / "docs" / "README.md"
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"skimage": "scikit-image", "ignite": "pytorch-ignite", "yaml": "pyyaml"}


def _premerge_module():
    spec = importlib.util.spec_from_file_location("zoo_premerge", REPO_ROOT / "scripts" / "zoo_premerge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_carries_the_code_and_the_zoo_unit_test_and_refuses_to_overwrite(tmp_path):
    target = export_bundle(tmp_path, BUNDLE_DIR)
    assert target == tmp_path / NAME
    assert (target / "models" / "model.pt").read_bytes() == (BUNDLE_DIR / "models" / "model.pt").read_bytes()
    assert sorted(p.name for p in (target / "models").iterdir()) == ["model.pt", "model.ts"]
    assert (target / "weakseg_monai" / "__init__.py").is_file(), "the bundle carries the code its configs import"
    assert not (target / "weakseg_monai" / "napari").exists(), "but not the napari plugin (napari and Qt)"
    assert not list((target / "weakseg_monai").rglob("__pycache__"))
    assert (tmp_path / "ci" / "unit_tests" / f"test_{NAME}.py").is_file(), "the zoo-style unit test, zoo tree"
    assert not (target / "runs").exists() and not (target / "data").exists()
    with pytest.raises(FileExistsError):
        export_bundle(tmp_path, BUNDLE_DIR)


# the optional [scale] extra (OME-Zarr): imported only inside the functions that read or write a .zarr path, which
# name the packages to install when they are missing; a zoo user without it runs everything else
OPTIONAL_INSIDE_FUNCTIONS = {"zarr", "ome_zarr", "dask", "distributed"}


def _imported(nodes) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party_imports() -> set[str]:
    """Every package the carried code imports: at module level always; inside functions too, except the optional
    [scale] extra's."""
    names = set()
    for path in (REPO_ROOT / "weakseg_monai").rglob("*.py"):
        if path.relative_to(REPO_ROOT / "weakseg_monai").parts[0] in NOT_CARRIED:
            continue
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = _imported(node for f in functions for node in ast.walk(f))
        everywhere = _imported(ast.walk(tree))
        names |= (everywhere - inside) | (inside - OPTIONAL_INSIDE_FUNCTIONS)
        names |= _imported(tree.body)  # a module-level import also made inside a function still counts
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("weakseg_monai", "__future__")}


def test_metadata_lists_every_package_the_carried_code_imports_and_no_package_of_ours():
    pinned = {line.split("==")[0].lower() for line in zoo_requirements(METADATA)}
    missing = {DISTRIBUTIONS.get(n, n) for n in _third_party_imports()} - pinned
    assert not missing, f"metadata.json must list {sorted(missing)} (the zoo installs only what it lists)"
    assert not any(name.startswith("weakseg") for name in pinned), "our package is carried, not installed"
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line) for line in zoo_requirements(METADATA))


def test_the_cards_quick_start_installs_exactly_what_metadata_lists():
    lines = _premerge_module().card_blocks(CARD)
    installs = [line for line in lines if line.startswith("pip install")]
    assert installs and installs[0] == "pip install torch==2.13.0", "torch first (the CPU wheel), then the rest"
    pins = {word for line in installs[1:] for word in line.split()[2:]}
    assert pins == set(zoo_requirements(METADATA)), "the card's install line and metadata.json disagree"
    runs = " ".join(lines)
    for job in ("run inference", "run training", "run evaluating"):
        assert job in runs, f"the card's Quick start runs `{job}` from the bundle folder"


def test_the_model_card_stands_alone():
    text = CARD.read_text()
    for heading in ("## Quick start", "## Input", "## Output", "## Data format", "## Training configuration",
                    "## Training on your own data", "## Intended use", "## Citation"):
        assert heading in text, f"the card needs a '{heading}' section"
    assert "doi:10.1007/978-3-030-00937-3_41" in text and "LNCS 11073" in text
    assert "not for clinical" in text.lower() or "not for diagnosis" in text.lower()
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith(("http://", "https://")):
            assert (CARD.parent / link).resolve().is_relative_to(BUNDLE_DIR.resolve()), f"{link}: outside the bundle"
            assert (CARD.parent / link).exists(), f"{link}: missing"
    for outside in ("bundle/configs", "bundle/models", "pip wheel", "top-level README"):
        assert outside not in text, f"the card points at the repository ('{outside}'); a zoo user has the bundle only"


@pytest.mark.slow
def test_the_zoo_premerge_passes_on_a_fresh_virtual_environment(tmp_path):
    """``scripts/zoo_premerge.py``: fresh venv, torch first, metadata's requirements, no wheel of ours; verify checks;
    the card's Quick start verbatim; inference from outside the folder; the zoo-style unit test."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "zoo_premerge.py"), "--work", str(tmp_path / "premerge")],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "zoo premerge passed" in result.stdout
