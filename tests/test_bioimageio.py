"""The bioimage.io export: both packages pass bioimage.io's own test tool with no network and without weakseg_monai
installed, the dense outputs equal our eager network's, and the predictor package carries model.pt unchanged."""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.metadata
import io
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core", reason="the [bioimageio] extra (Python >= 3.11)")

from weakseg_monai.bioimageio.package import dense_reference, export_bioimageio  # noqa: E402
from weakseg_monai.families.loading import load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "bundle" / "models" / "model.pt"
NAME = "weakseg_nuclei_3d"
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens there: any download attempt fails


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bioimageio")
    written = export_bioimageio(MODEL, out)
    assert [p.name for p in written] == [f"{NAME}_dense", f"{NAME}_dense.zip", f"{NAME}_predictor",
                                         f"{NAME}_predictor.zip"]
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def isolated(tmp_path: Path) -> tuple[list[str], dict]:
    """A Python that sees this environment's installed packages but not weakseg_monai (``-S`` skips the ``.pth``
    files, the editable install among them; the working folder is not the repository) and no network."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=os.pathsep.join(paths), HTTPS_PROXY=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY,
               https_proxy=DEAD_PROXY, http_proxy=DEAD_PROXY, BIOIMAGEIO_CACHE_PATH=str(tmp_path / "cache"))
    return [sys.executable, "-S"], env


def test_both_packages_pass_bioimageio_test_offline_without_weakseg_monai_installed(packages, tmp_path):
    python, env = isolated(tmp_path)
    probe = subprocess.run([*python, "-c", "import weakseg_monai"], cwd=tmp_path, env=env, capture_output=True)
    assert probe.returncode != 0, "weakseg_monai must not be importable in the isolated interpreter"
    # the napari case: another weakseg_monai is already imported; the carried copy must neither use nor change it
    folder = packages / f"{NAME}_predictor"
    script = (
        "import sys, types, importlib.util, torch\n"
        "other = sys.modules['weakseg_monai'] = types.ModuleType('weakseg_monai')\n"
        f"spec = importlib.util.spec_from_file_location('arch', {str(folder / 'weakseg_predictor.py')!r})\n"
        "arch = importlib.util.module_from_spec(spec); spec.loader.exec_module(arch)\n"
        "module = arch.WeakSegPredictorZYX(spacing=[0.5, 0.5, 1.0])\n"
        f"module.load_state_dict(torch.load({str(folder / 'model.pt')!r}, weights_only=True))\n"
        "out = module(torch.rand(2, 1, 8, 40, 48) * 1000)\n"
        "assert out.dtype == torch.int32 and tuple(out.shape) == (2, 1, 8, 40, 48), out.shape\n"
        "assert sys.modules['weakseg_monai'] is other and not hasattr(other, 'bioimageio')\n"
    )
    run = subprocess.run([*python, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for variant in ("dense", "predictor"):
        run = subprocess.run(
            [*python, "-m", "bioimageio.core", "test", str(packages / f"{NAME}_{variant}.zip")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, f"{variant}: bioimageio test failed\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


def carried_sources(architecture: Path) -> dict[str, str]:
    """The sources the architecture file carries (its embedded zip), by path inside the zip."""
    namespace: dict = {}
    text = architecture.read_text()
    start = text.index("PACKAGE_ZIP = (")
    exec(text[start : text.index(")", start) + 1], namespace)  # the constant only, not the import side effects
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(namespace["PACKAGE_ZIP"]))) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def requirement_closure(names: list[str]) -> set[str]:
    """The distributions ``names`` need, transitively, as installed here (markers evaluated, no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def optional_extra(extra: str) -> set[str]:
    """The distributions our optional ``extra`` adds (the carried code imports them only inside functions)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    names = set()
    for text in importlib.metadata.requires("weakseg-monai") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}) \
                and not requirement.marker.evaluate({"extra": ""}):
            names.add(canonicalize_name(requirement.name))
    return names


def test_predictor_environment_file_covers_every_import_of_the_carried_code(packages):
    """Every third-party module the carried package imports (anywhere, function-level imports included) comes from
    a distribution the environment file lists or that one of those requires; the carried code is renamed, so it
    never meets an installed weakseg_monai."""
    import yaml
    from packaging.utils import canonicalize_name

    folder = packages / f"{NAME}_predictor"
    sources = carried_sources(folder / "weakseg_predictor.py")
    carried = {name.split("/")[0] for name in sources}
    assert len(carried) == 1 and carried.pop().startswith("weakseg_monai_")
    assert not any("/napari/" in name or name.endswith("bioimageio/package.py") for name in sources)
    imported = set()
    for text in sources.values():
        assert not re.search(r"\bweakseg_monai\b", text), "an import of weakseg_monai survived the renaming"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and not m.startswith("weakseg_monai")}
    third_party.discard("__future__")
    environment = yaml.safe_load((folder / "environment.yaml").read_text())
    pins = [entry.split("==")[0] for entry in environment["dependencies"][-1]["pip"]]
    covered = requirement_closure(pins)
    optional = optional_extra("scale")  # OME-Zarr's packages: imported only when a .zarr path is read or written
    distributions = importlib.metadata.packages_distributions()
    missing = {m: distributions.get(m) for m in third_party
               if not any(canonicalize_name(d) in covered | optional for d in distributions.get(m, []))}
    assert not missing, f"imported by the carried code, not in the environment file: {missing}"
    assert {"torch", "monai", "nibabel", "pytorch-ignite"} <= {canonicalize_name(p) for p in pins}


def test_dense_package_outputs_equal_our_eager_network(packages):
    """bioimageio.core runs the package (its scale_range + clip preprocessing, the TorchScript, the axis
    transposes) on the sample; our own normalisation and eager network give the same outputs within 1e-5."""
    from bioimageio.core.prediction import predict

    folder = packages / f"{NAME}_dense"
    test_input = np.load(folder / "test_input.npy")
    sample = predict(model=folder / "rdf.yaml", inputs={"raw": test_input})
    reference = dense_reference(load_model(MODEL), test_input[0, 0].transpose(2, 1, 0))
    for key, expected in zip(("cls_logits", "box_regression"), reference):
        got = sample.members[key].data.to_numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.abs(reference[0]).max() > 1.0  # not a degenerate comparison


def test_predictor_package_carries_model_pt_unchanged_and_finds_the_sample_nuclei(packages):
    import yaml

    folder = packages / f"{NAME}_predictor"
    assert sha256(folder / "model.pt") == sha256(MODEL)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    weights = rdf["weights"]["pytorch_state_dict"]
    assert weights["sha256"] == sha256(MODEL)
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-030-00937-3_41" and rdf["license"] == "Apache-2.0"
    assert [a["scale"] for a in rdf["inputs"][0]["axes"][2:]] == [1.0, 0.5, 0.5]  # z, y, x µm
    labels = np.load(folder / "test_labels.npy")
    assert labels.dtype == np.int32 and labels.shape == np.load(folder / "test_input.npy").shape
    assert 15 <= len(np.unique(labels)) - 1 <= 40  # the sample's nuclei (27 with the shipped model)
    assert torch.load(folder / "model.pt", weights_only=True).keys() == torch.load(MODEL, weights_only=True).keys()
