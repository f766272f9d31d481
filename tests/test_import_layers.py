"""The package's layers import only downward, and no module imports another module's private name (issue 28).

Layer order, low to high: ``conventions``, ``utils``, ``data``, ``layers``, ``losses``, ``networks``, ``transforms``,
``planning``, ``metrics``, ``inference``, ``engines``; above them the entry points (``__main__``, ``napari``,
``bioimageio``, the top-level package). ``families`` is split: its registry is a leaf the networks register into
(the ``utils`` layer), its loader builds a checkpoint's network (the ``networks`` layer). Every import statement
counts, module-level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import weakseg_monai

LAYERS = [
    "conventions",
    "utils",
    "data",
    "layers",
    "losses",
    "networks",
    "transforms",
    "planning",
    "metrics",
    "inference",
    "engines",
]
PLACED = {"weakseg_monai.families.registry": "utils", "weakseg_monai.families.loading": "networks"}
PACKAGE = Path(weakseg_monai.__file__).parent


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int | None:
    """The layer index of a ``weakseg_monai`` module; ``len(LAYERS)`` for an entry point; None outside the package."""
    if module != "weakseg_monai" and not module.startswith("weakseg_monai."):
        return None
    for prefix, layer in PLACED.items():
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS.index(layer)
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def imports(path: Path, package_dir: Path = PACKAGE) -> list[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` of every import in ``path``, relative imports resolved."""
    module = module_name(path, package_dir)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [(base, alias.name, node.lineno) for alias in node.names]
    return found


def violations(package_dir: Path = PACKAGE) -> list[str]:
    """One line per upward import and per private name imported from another module, under ``package_dir``."""
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        me = module_name(path, package_dir)
        my_rank = rank(me)
        for target, name, line in imports(path, package_dir):
            other = rank(target)
            if other is None:
                continue
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            if other > my_rank:
                problems.append(f"{where}: {me} (layer {my_rank}) imports {target} (layer {other}) above it")
            if name and name.startswith("_") and not name.startswith("__") and target != me:
                problems.append(f"{where}: {me} imports the private name {name} from {target}")
    return problems


def test_every_module_imports_only_its_own_layer_or_lower_and_no_private_names():
    assert violations() == []


def test_the_check_sees_an_upward_and_a_private_import(tmp_path):
    """The checker itself can fail: a module in ``utils`` of a copy of the layout that imports ``inference`` and
    ``metrics`` (above it) and a private name."""
    planted = tmp_path / "weakseg_monai" / "utils" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text(
        "from weakseg_monai.inference.predictor import WeakSegPredictor\nfrom ..metrics.instance import _x\n"
    )
    found = violations(tmp_path / "weakseg_monai")
    assert len(found) == 3, found  # inference above utils; metrics above utils; a private name
    assert "weakseg_monai.metrics.instance" in found[1] and "_x" in found[2]
