"""The bundle's configs read as a table of contents (issue 28): one layout, shared pieces defined once, overrides that
hold only what differs. Each check reads the real files; the layout check runs the real formatter."""

from __future__ import annotations

import json
import sys

import pytest

from .conftest import BUNDLE_DIR, REPO_ROOT, run_cli

CONFIGS = BUNDLE_DIR / "configs"
# each read after train.json
OVERRIDES = ["train_baseline.json", "train_boundary.json", "multi_gpu_train.json", "evaluate.json"]


def _targets(value: object) -> list[str]:
    """Every ``_target_`` in a config value, depth first."""
    if isinstance(value, dict):
        own = [value["_target_"]] if "_target_" in value else []
        return own + [t for v in value.values() for t in _targets(v)]
    if isinstance(value, list):
        return [t for v in value for t in _targets(v)]
    return []


def test_the_configs_are_in_the_formatters_layout_and_train_json_reads_as_a_table_of_contents():
    result = run_cli(str(REPO_ROOT / "scripts" / "format_configs.py"), "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    text = (CONFIGS / "train.json").read_text()
    assert len(text.splitlines()) < 250
    targets = _targets(json.loads(text))
    for part in ("WeakInstanceSegNet", "BoxSelector", "MaskBranch", "PartialMaskLoss", "BoxSupervisedMaskLoss",
                 "AdamW", "CosineAnnealingLR", "RandFlipBoxd", "RandGaussianNoised", "WeakSegTrainer",
                 "SupervisedEvaluator", "ValidationHandler", "ScoreThresholdCalibrator", "AtomicCheckpointSaver"):
        assert any(t.split(".")[-1] == part for t in targets), f"{part} is no longer a component of train.json"


def test_the_formatter_refuses_a_file_out_of_layout_and_keeps_the_content(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from format_configs import formatted
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    raw = {"a": [1, 2, 3], "b": {"_target_": "X", "keys": ["image", "label"], "inner": {"_target_": "Y", "n": 1}}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(raw, indent=4))
    assert run_cli(str(REPO_ROOT / "scripts" / "format_configs.py"), "--check", str(path)).returncode == 1
    text = formatted(path)
    assert json.loads(text) == raw and '"a": [1, 2, 3]' in text and '"inner": {"_target_": "Y", "n": 1}' in text


@pytest.mark.parametrize("component", ["SupervisedEvaluator", "WeakSegTrainer", "CacheDataset"])
def test_shared_pieces_are_written_once(component):
    """The evaluator, trainer and training data are defined in train.json (and the evaluator once more in the
    stand-alone inference.json); the configs read after train.json override their fields instead of copying them."""
    found = {p.name: [t.split(".")[-1] for t in _targets(json.loads(p.read_text()))].count(component)
             for p in sorted(CONFIGS.glob("*.json"))}
    expected = {"train.json": 1, "inference.json": 1 if component == "SupervisedEvaluator" else 0}
    assert {k: v for k, v in found.items() if v} == {k: v for k, v in expected.items() if v}


@pytest.mark.parametrize("name", OVERRIDES)
def test_overrides_hold_only_what_differs(name):
    """No override re-lists the training setup steps or the plan's checks; each of its ids either is new or replaces
    a value train.json has (a misspelt id would silently add a setting nobody reads)."""
    train = json.loads((CONFIGS / "train.json").read_text())
    override = json.loads((CONFIGS / name).read_text())
    if name != "evaluate.json":  # evaluate runs an evaluator, not the training setup
        assert "initialize" not in override, f"{name} re-lists train.json's initialize"
    for key in override:
        if key.startswith("+"):
            assert key[1:] in train, f"{name}: {key} extends an id train.json does not have"
            continue
        parts = key.split("#")
        node = train
        for i, part in enumerate(parts[:-1]):
            present = part in node if isinstance(node, dict) else isinstance(node, list) and int(part) < len(node)
            assert present, f"{name}: {key} overrides inside {'#'.join(parts[: i + 1])}, which train.json lacks"
            node = node[part] if isinstance(node, dict) else node[int(part)]
