"""Export ``bundle/`` as a self-contained model-zoo folder named after the bundle (``metadata.json`` ``name``).

The repository keeps the bundle as ``bundle/`` and its code as the ``weakseg_monai`` package; the zoo knows a bundle
by its name, e.g. ``weakseg_nuclei_3d/``, runs it from inside with relative paths (``configs/inference.json``) and
installs only what ``metadata.json`` lists from the public package index. So the export carries the code its configs
reference, as zoo bundles carry theirs in ``scripts/``: the package is copied to ``<name>/weakseg_monai/`` (same
import path), which is importable from inside the folder, by MONAI's ``run`` (it puts the bundle root on
``sys.path``), and from outside with ``--bundle_root`` (each config's first ``initialize`` step puts a bundle root
that carries ``weakseg_monai/`` on ``sys.path``).

Beside the bundle, ``OUT/ci/unit_tests/test_<name>.py`` is the zoo-style unit test (train a few iterations,
evaluate, infer), in the place the model zoo's tree keeps it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ZOO_MAX_FILE_BYTES = 25 * 1024 * 1024  # the model zoo refuses larger files
SHIPPED = ("LICENSE", "configs", "docs", "sample", "sample_gt", "models/model.pt", "models/model.ts")
PACKAGE = "weakseg_monai"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
# subpackages the bundle's configs never import: the napari plugin (napari, Qt) and the bioimage.io export
NOT_CARRIED = ("napari", "bioimageio")


def default_bundle_dir() -> Path:
    """``bundle/`` of the source checkout this package runs from (the wheel itself does not carry it)."""
    return Path(__file__).resolve().parents[2] / "bundle"


def zoo_unit_test_source(name: str) -> Path:
    """``tests/test_<name>.py`` of the source checkout: the zoo-style unit test, part of our own suite too."""
    return Path(__file__).resolve().parents[2] / "tests" / f"test_{name}.py"


def export_bundle(out: str | Path, bundle_dir: str | Path | None = None) -> Path:
    """Copy what the zoo ships of ``bundle_dir`` (configs, docs, sample, ``models/model.pt`` and ``model.ts``,
    licence; no ``runs/``, generated data or training checkpoints) plus the ``weakseg_monai`` package to
    ``out/<name>/``, and the zoo-style unit test to ``out/ci/unit_tests/test_<name>.py``. Returns ``out/<name>``.

    Raises ``FileExistsError`` when either target exists, ``ValueError`` for a file over the zoo's 25 MB limit.
    """
    source = Path(bundle_dir) if bundle_dir else default_bundle_dir()
    name = json.loads((source / "configs" / "metadata.json").read_text())["name"]
    target = Path(out) / name
    unit_test = Path(out) / "ci" / "unit_tests" / f"test_{name}.py"
    for path in (target, unit_test):
        if path.exists():
            raise FileExistsError(f"{path} exists: remove it or choose another output folder")
    test_source = zoo_unit_test_source(name)
    if not test_source.is_file():
        raise FileNotFoundError(f"{test_source}: the zoo-style unit test, missing (export from a source checkout)")
    for entry in SHIPPED:
        path = source / entry
        if path.is_dir():
            shutil.copytree(path, target / entry, ignore=IGNORED)
        elif path.is_file():
            (target / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / entry)
        else:
            raise FileNotFoundError(f"{path}: part of the exported bundle, missing")
    package = Path(__file__).resolve().parents[1]  # this package (utils/ is one level down)
    shutil.copytree(package, target / PACKAGE, ignore=carried_code_only(package))
    too_big = [p for p in target.rglob("*") if p.is_file() and p.stat().st_size > ZOO_MAX_FILE_BYTES]
    if too_big:
        shutil.rmtree(target)
        raise ValueError(f"files over the zoo's 25 MB limit: {too_big}")
    unit_test.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(test_source, unit_test)
    return target


def carried_code_only(package: Path):
    """``copytree``'s ignore for the package: ``IGNORED`` plus the subpackages in ``NOT_CARRIED``."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        left_out = {n for n in names if Path(folder).resolve() == package and n in NOT_CARRIED}
        return set(IGNORED(folder, names)) | left_out

    return ignore


def zoo_requirements(metadata: dict) -> list[str]:
    """``name==version`` lines the model zoo's CI installs for a bundle (``ci/get_bundle_requirements.py``):
    monai, torch and numpy from their ``*_version`` keys, then ``optional_packages_version`` and
    ``required_packages_version``."""
    lines = []
    for key, package in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        if key in metadata:
            lines.append(f"{package}=={metadata[key]}")
    for key in ("optional_packages_version", "required_packages_version"):
        lines.extend(f"{name}=={version}" for name, version in metadata.get(key, {}).items())
    return lines
