"""Export ``bundle/`` as a model-zoo folder named after the bundle (``metadata.json`` ``name``).

The repository keeps the folder as ``bundle/``; the zoo (``monai.bundle download`` / ``load``) knows a bundle by
its name, e.g. ``weakseg_nuclei_3d/``, run from inside it with relative paths (``configs/inference.json``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ZOO_MAX_FILE_BYTES = 25 * 1024 * 1024  # the model zoo refuses larger files (they go in large_files.yml)
SHIPPED = ("LICENSE", "large_files.yml", "configs", "docs", "sample", "sample_gt", "models/model.pt")


def default_bundle_dir() -> Path:
    """``bundle/`` of the source checkout this package runs from (the wheel itself does not carry it)."""
    return Path(__file__).resolve().parents[2] / "bundle"


def export_bundle(out: str | Path, bundle_dir: str | Path | None = None) -> Path:
    """Copy what the zoo ships of ``bundle_dir`` (configs, docs, sample, ``models/model.pt``, licence,
    ``large_files.yml``; no ``runs/``, generated data or training checkpoints) to ``out/<name>/``.

    Raises ``FileExistsError`` when that folder exists, ``ValueError`` for a file over the zoo's 25 MB limit.
    """
    source = Path(bundle_dir) if bundle_dir else default_bundle_dir()
    name = json.loads((source / "configs" / "metadata.json").read_text())["name"]
    target = Path(out) / name
    if target.exists():
        raise FileExistsError(f"{target} exists: remove it or choose another output folder")
    for entry in SHIPPED:
        path = source / entry
        if path.is_dir():
            shutil.copytree(path, target / entry, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        elif path.is_file():
            (target / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / entry)
        else:
            raise FileNotFoundError(f"{path}: part of the exported bundle, missing")
    too_big = [p for p in target.rglob("*") if p.is_file() and p.stat().st_size > ZOO_MAX_FILE_BYTES]
    if too_big:
        shutil.rmtree(target)
        raise ValueError(f"files over the zoo's 25 MB limit (list them in large_files.yml): {too_big}")
    return target
