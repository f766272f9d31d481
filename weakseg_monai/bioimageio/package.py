"""``export_bioimageio``: the trained model as two bioimage.io (spec 0.5) model packages, folder + zip each.

- ``<name>_dense``: the dense network as TorchScript (``wrappers.DenseZYX``): runs in Java consumers (deepImageJ)
  and any bioimage.io runtime; outputs class logits and box deltas at the detection stride, with the anchors, box
  coding and thresholds in ``config.weakseg_monai`` so a consumer can decode detections. No masks.
- ``<name>_predictor``: the whole predictor (``wrappers.PredictorZYX``) from the bundle's ``model.pt`` unchanged
  (same bytes, same sha256) and a self-contained architecture file (``architecture``): int32 instance labels at
  input size, for Python consumers (bioimageio.core, napari, ilastik's PyTorch runtime).

Descriptive fields (name, description, authors, cite, licence, tags, version) come from
``bundle/configs/metadata.json``, so the two never drift; the model card ``bundle/docs/README.md`` is the
documentation. Test tensors are the shipped sample at the working spacing, outputs from our own eager code.
Building a description and testing a package need no network (``tests/test_bioimageio.py`` checks with a dead
proxy); authors carry no GitHub user name, whose check would ask GitHub.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from weakseg_monai.bioimageio.architecture import CALLABLE, write_architecture
from weakseg_monai.bioimageio.wrappers import DENSE_OUTPUTS, DenseZYX, PredictorZYX
from weakseg_monai.data.io import read_volume, resolve_spacing
from weakseg_monai.families.loading import load_model
from weakseg_monai.transforms.dictionary import INTENSITY_CLAMP, normalise, resample_volume
from weakseg_monai.transforms.input_rule import InputRule
from weakseg_monai.utils.zoo import default_bundle_dir

VARIANTS = ("dense", "predictor")
BOX_DELTAS = ("dx", "dy", "dz", "dw", "dh", "dd")  # MONAI BoxCoder deltas, (x, y, z) order
CLASSES = ("background", "nucleus")
SPATIAL = ("z", "y", "x")  # bioimage.io's order; ours is (x, y, z)
TOLERANCE = 1e-4  # reproducibility tolerance written into the dense package (other CPUs, other BLAS)


def require_bioimageio() -> None:
    """Fail with what to install when the optional ``[bioimageio]`` extra is missing."""
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            f"export-bioimageio needs the [bioimageio] extra ({err.name} is missing; Python >= 3.11): from the "
            "repository, pip install -e \".[bioimageio]\" (bioimageio.core 0.11.0, bioimageio.spec 0.5.12.0, "
            "pydantic < 2.14)"
        ) from None


def bioimageio_fields(meta: dict) -> dict:
    """The bioimage.io fields ``metadata.json`` gives: name, description, version, authors, cite, licence, tags."""
    required = ("name", "description", "version", "authors", "license", "cite", "tags")
    missing = [key for key in required if key not in meta]
    if missing:
        raise KeyError(f"metadata.json lacks {', '.join(missing)} (the bioimage.io export reads them from there)")
    authors = meta["authors"] if isinstance(meta["authors"], list) else [meta["authors"]]
    tags = sorted({re.sub(r"[^a-z0-9]+", "-", str(t).lower()).strip("-") for t in meta["tags"]} | {"pytorch"})
    return {
        "name": meta["name"],
        "description": f"{meta.get('task', meta['description'])}. {meta['description']}",
        "version": meta["version"],
        "authors": authors,
        "cite": meta["cite"],
        "license": meta["license"],
        "tags": tags,
    }


def sample_at_working_grid(bundle: Path, model: torch.nn.Module) -> np.ndarray:
    """The bundle's first sample resampled to the model's working spacing and cropped to its size divisor: a raw
    ``(X, Y, Z)`` float32 volume (not normalised: the packages normalise)."""
    path = sorted((bundle / "sample").glob("*.nii*"))[0]
    image = read_volume(path).astype(np.float32)
    rule = InputRule.of(model)
    shape, _ = rule.working_shape(image.shape, resolve_spacing(path))
    x = resample_volume(torch.as_tensor(image)[None], [int(s) for s in shape])[0].numpy()
    divisor = model.size_divisor()
    return np.ascontiguousarray(x[tuple(slice(0, s // d * d) for s, d in zip(x.shape, divisor))])


def to_zyx(volume: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` -> ``(1, 1, Z, Y, X)``."""
    return np.ascontiguousarray(np.asarray(volume).transpose(2, 1, 0)[None, None])


def write_tensor(staging: Path, name: str, array: np.ndarray) -> dict:
    """``test_tensor`` (``.npy``, exact) and ``sample_tensor`` (``.tif`` without the batch axis, what viewers open)
    fields of a tensor description."""
    import tifffile
    from bioimageio.spec.model import v0_5

    np.save(staging / f"test_{name}.npy", array)
    tifffile.imwrite(staging / f"sample_{name}.tif", array[0])
    return {
        "test_tensor": v0_5.FileDescr(source=staging / f"test_{name}.npy"),
        "sample_tensor": v0_5.FileDescr(source=staging / f"sample_{name}.tif"),
    }


def dense_reference(model: torch.nn.Module, volume: np.ndarray) -> tuple[np.ndarray, ...]:
    """Our eager dense outputs for a raw ``(X, Y, Z)`` volume, normalised by our own rule, in bioimage.io's order."""
    low, high = InputRule.of(model).intensity_range(volume)
    x = normalise(torch.as_tensor(volume)[None, None], low, high)
    with torch.no_grad():
        out = model.dense_network()(x)
    return tuple(np.ascontiguousarray(out[k].permute(0, 1, 4, 3, 2).numpy()) for k in DENSE_OUTPUTS)


def core_requirements() -> list[str]:
    """The distributions this package's core needs, the extras it asks of them expanded (``monai[nibabel,
    ignite, ...]`` -> monai, nibabel, pytorch-ignite, ...), without duplicates, in order."""
    from packaging.requirements import Requirement

    names: list[str] = []
    for text in importlib.metadata.requires("weakseg-monai") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra of ours (test, napari, ...)
        names.append(requirement.name)
        for extra in sorted(requirement.extras):
            for inner in importlib.metadata.requires(requirement.name) or []:
                dependency = Requirement(inner)
                if dependency.marker is not None and dependency.marker.evaluate({"extra": extra}):
                    names.append(dependency.name)
    return list(dict.fromkeys(names))


def environment_file(path: Path) -> Path:
    """A conda environment file pinning the installed versions of ``core_requirements()`` (all on the package index;
    the package itself travels inside the architecture file)."""
    pins = [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in core_requirements()]
    lines = ["name: weakseg-monai", "channels: [conda-forge, nodefaults]", "dependencies:", "  - python=3.11",
             "  - pip", "  - pip:"] + [f"    - {pin}" for pin in pins]
    path.write_text("\n".join(lines) + "\n")
    return path


def save_cover(path: Path, volume: np.ndarray, labels: np.ndarray) -> Path:
    """A 2:1 cover: the sample's xy max projection, without and with the predicted outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from weakseg_monai.data.preview import projection_outlines

    mip = volume.max(axis=2).T
    lo, hi = np.percentile(mip, [1, 99.8])
    outline = projection_outlines(labels, 2).T
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax, show in zip(axes, (False, True)):
        ax.imshow(mip, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest", aspect="auto")
        if show:
            overlay = np.zeros((*outline.shape, 4), dtype=np.float32)
            overlay[outline] = (1.0, 0.85, 0.0, 0.9)
            ax.imshow(overlay, origin="lower", interpolation="nearest", aspect="auto")
        ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1, 0.02, 0)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class PackageWriter:
    """Writes one variant: stages its files in ``out/.<package>/``, builds the description, saves ``out/<package>/``
    and ``out/<package>.zip``."""

    def __init__(self, ckpt: Path, out: Path, bundle: Path) -> None:
        self.ckpt, self.out, self.bundle = ckpt, out, bundle
        self.meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        self.fields = bioimageio_fields(self.meta)
        self.model = load_model(ckpt)
        self.rule = InputRule.of(self.model)
        self.volume = sample_at_working_grid(bundle, self.model)

    # ------------------------------------------------------------------ shared pieces
    def spatial_axes(self, v0_5, minimum: tuple[int, ...], step: tuple[int, ...]) -> list:
        spacing = dict(zip("xyz", self.rule.working_spacing))
        low = dict(zip("xyz", minimum))
        steps = dict(zip("xyz", step))
        return [
            v0_5.SpaceInputAxis(
                id=v0_5.AxisId(a), size=v0_5.ParameterizedSize(min=low[a], step=steps[a]), scale=spacing[a],
                unit="micrometer",
            )
            for a in SPATIAL
        ]

    def input_descr(self, v0_5, description: str, size: tuple, tensors: dict, preprocessing: list | None = None):
        """The one input, ``raw``: batch, channel, then z, y, x of ``size = (minimum, step)`` (x, y, z) voxels."""
        return v0_5.InputTensorDescr(
            id=v0_5.TensorId("raw"),
            description=description,
            axes=[
                v0_5.BatchAxis(),
                v0_5.ChannelAxis(channel_names=[v0_5.Identifier("raw")]),
                *self.spatial_axes(v0_5, *size),
            ],
            **tensors,
            data=v0_5.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=preprocessing or [],
        )

    def output_axes(self, v0_5, channels: list[str], stride: tuple[int, ...]) -> list:
        spacing = dict(zip("xyz", self.rule.working_spacing))
        factor = dict(zip("xyz", stride))
        return [
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channels]),
            *[
                v0_5.SpaceOutputAxis(
                    id=v0_5.AxisId(a), size=v0_5.SizeReference(tensor_id=v0_5.TensorId("raw"), axis_id=v0_5.AxisId(a)),
                    scale=spacing[a] * factor[a], unit="micrometer",
                )
                for a in SPATIAL
            ],
        ]

    def common(self, v0_5, staging: Path, variant: str, labels: np.ndarray) -> dict:
        fields = self.fields
        readme = shutil.copy(self.bundle / "docs" / "README.md", staging / "README.md")
        cover = save_cover(staging / "cover.png", self.volume, labels)
        return {
            "name": f"{fields['name']}_{variant}",
            "description": fields["description"],
            "version": fields["version"],
            "authors": [v0_5.Author(name=name) for name in fields["authors"]],
            "cite": [v0_5.CiteEntry(text=c["text"], doi=v0_5.Doi(c["doi"])) for c in fields["cite"]],
            "license": v0_5.LicenseId(fields["license"]),
            "tags": fields["tags"],
            "documentation": v0_5.FileDescr(source=Path(readme)),
            "covers": [v0_5.FileDescr(source=cover)],
        }

    def detector_config(self) -> dict:
        """What a consumer needs to decode the dense outputs (StarDist documents its post-processing likewise)."""
        model = self.model
        anchors = model.anchor_shapes.tolist()
        return {
            "axes_inside": "the wrapper transposes (z, y, x) <-> our (x, y, z); every size below is (x, y, z)",
            "working_spacing_um": rounded(self.rule.working_spacing),
            "intensity_percentiles": rounded(self.rule.intensity_percentiles),
            "intensity_clamp": list(INTENSITY_CLAMP),
            "detection_stride": list(model.grid_multiple()),
            "anchor_shapes_voxels": anchors,
            "anchor_centres": "output location (i, j, k): centre (i, j, k) * stride + stride // 2 working voxels",
            "cls_logits_channels": f"anchor a, class c at channel a * {len(CLASSES)} + c; softmax over c; "
            f"classes {list(CLASSES)}",
            "box_regression_channels": f"anchor a, delta d at channel a * 6 + d; deltas {list(BOX_DELTAS)}",
            "box_coder": "monai.apps.detection.utils.box_coder.BoxCoder(weights=(1, 1, 1, 1, 1, 1)), boxes "
            "StandardMode (x0, y0, z0, x1, y1, z1), half-open, working voxels",
            "score_threshold": rounded([model.score_threshold()])[0],
            "nms_iou_threshold": rounded([model.nms_thresh])[0],
            "masks": "not in this package (the mask head runs per box): use the predictor package",
        }

    def save(self, descr, name: str) -> list[Path]:
        from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

        folder, archive = self.out / name, self.out / f"{name}.zip"
        save_bioimageio_package_as_folder(descr, output_path=folder)
        save_bioimageio_package(descr, output_path=archive)
        return [folder, archive]

    def staging(self, name: str) -> Path:
        path = self.out / f".{name}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def predicted_labels(self) -> np.ndarray:
        """Our predictor's instance labels ``(X, Y, Z)`` for the sample (the predictor package's test output)."""
        module = PredictorZYX(self.rule.working_spacing)
        module.load_state_dict(torch.load(self.ckpt, map_location="cpu", weights_only=True))
        labels = module(torch.as_tensor(to_zyx(self.volume)))
        return labels[0, 0].numpy().transpose(2, 1, 0)

    # ------------------------------------------------------------------ the variants
    def write_dense(self, labels: np.ndarray) -> list[Path]:
        from bioimageio.spec.model import v0_5

        name = f"{self.fields['name']}_dense"
        staging = self.staging(name)
        wrapper = DenseZYX(self.model.dense_network()).eval()
        test_input = to_zyx(self.volume)
        torch.jit.script(wrapper).save(str(staging / "weights_torchscript.pt"))  # scripted, not traced: any size
        outputs = dense_reference(self.model, self.volume)
        n_anchors = len(self.model.anchor_shapes)
        channels = {
            "cls_logits": [f"a{a}_{c}" for a in range(n_anchors) for c in CLASSES],
            "box_regression": [f"a{a}_{d}" for a in range(n_anchors) for d in BOX_DELTAS],
        }
        descriptions = {
            "cls_logits": "class logits per anchor (softmax over background / nucleus)",
            "box_regression": "box deltas per anchor (MONAI BoxCoder, weights 1)",
        }
        tensors = {key: write_tensor(staging, key, array) for key, array in zip(DENSE_OUTPUTS, outputs)}
        divisor = self.model.size_divisor()
        low, high = rounded(self.rule.intensity_percentiles)
        stride = tuple(int(s) for s in self.model.grid_multiple())
        descr = v0_5.ModelDescr(
            **self.common(v0_5, staging, "dense", labels),
            inputs=[
                self.input_descr(
                    v0_5,
                    "fluorescence volume at the working spacing (the axes' scale), any intensity range",
                    (tuple(2 * d for d in divisor), divisor),
                    write_tensor(staging, "input", test_input),
                    [
                        v0_5.ScaleRangeDescr(
                            kwargs=v0_5.ScaleRangeKwargs(
                                axes=[v0_5.AxisId(a) for a in SPATIAL], min_percentile=low, max_percentile=high
                            )
                        ),
                        v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=INTENSITY_CLAMP[0], max=INTENSITY_CLAMP[1])),
                    ],
                )
            ],
            outputs=[
                v0_5.OutputTensorDescr(
                    id=v0_5.TensorId(key),
                    description=descriptions[key],
                    axes=self.output_axes(v0_5, channels[key], stride),
                    **tensors[key],
                    data=v0_5.IntervalOrRatioDataDescr(type="float32"),
                )
                for key in DENSE_OUTPUTS
            ],
            weights=v0_5.WeightsDescr(
                torchscript=v0_5.TorchscriptWeightsDescr(
                    source=staging / "weights_torchscript.pt", pytorch_version=v0_5.Version(torch_version())
                )
            ),
            config=v0_5.Config(
                bioimageio=v0_5.BioimageioConfig(
                    reproducibility_tolerance=[
                        v0_5.ReproducibilityTolerance(absolute_tolerance=TOLERANCE, relative_tolerance=TOLERANCE)
                    ]
                ),
                weakseg_monai=self.detector_config(),
            ),
        )
        written = self.save(descr, name)
        shutil.rmtree(staging)
        return written

    def write_predictor(self, labels: np.ndarray) -> list[Path]:
        from bioimageio.spec.model import v0_5

        name = f"{self.fields['name']}_predictor"
        staging = self.staging(name)
        test_input, test_labels = write_tensor(staging, "input", to_zyx(self.volume)), write_tensor(
            staging, "labels", to_zyx(labels)
        )
        weights = shutil.copy(self.ckpt, staging / "model.pt")  # unchanged: the bundle's bytes
        architecture = write_architecture(staging / "weakseg_predictor.py", self.fields["version"])
        divisor = self.model.size_divisor()
        same_grid = (1, 1, 1)
        descr = v0_5.ModelDescr(
            **self.common(v0_5, staging, "predictor", labels),
            inputs=[
                self.input_descr(
                    v0_5,
                    "fluorescence volume at the axes' scale (µm), raw intensities (normalised inside)",
                    (tuple(4 * d for d in divisor), tuple(2 * d for d in divisor)),
                    test_input,
                )
            ],
            outputs=[
                v0_5.OutputTensorDescr(
                    id=v0_5.TensorId("labels"),
                    description="instance labels: 0 background, k > 0 instance k",
                    axes=self.output_axes(v0_5, ["instances"], same_grid),
                    **test_labels,
                    data=v0_5.IntervalOrRatioDataDescr(type="int32"),
                )
            ],
            weights=v0_5.WeightsDescr(
                pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                    source=Path(weights),
                    architecture=v0_5.ArchitectureFromFileDescr(
                        source=architecture, callable=v0_5.Identifier(CALLABLE),
                        kwargs={"spacing": list(self.rule.working_spacing)},
                    ),
                    pytorch_version=v0_5.Version(torch_version()),
                    dependencies=v0_5.FileDescr(source=environment_file(staging / "environment.yaml")),
                )
            ),
            config=v0_5.Config(weakseg_monai={"score_threshold": rounded([self.model.score_threshold()])[0]}),
        )
        written = self.save(descr, name)
        shutil.rmtree(staging)
        return written


def rounded(values) -> list[float]:
    """Buffers are float32: 99.8 reads back as 99.80000305; six significant digits give the number meant."""
    return [float(f"{float(v):.6g}") for v in values]


def torch_version() -> str:
    return torch.__version__.split("+")[0]


def package_paths(out: Path, name: str) -> list[Path]:
    """The four paths an export writes: each variant's folder and zip."""
    return [p for v in VARIANTS for p in (out / f"{name}_{v}", out / f"{name}_{v}.zip")]


def export_bioimageio(ckpt: str | Path, out: str | Path, bundle_dir: str | Path | None = None) -> list[Path]:
    """Write ``out/<name>_dense/`` + ``.zip`` and ``out/<name>_predictor/`` + ``.zip`` (``name`` from
    ``metadata.json``) for the model in ``ckpt``; returns the four paths. Nothing is written when one of them
    exists, the checkpoint is missing, or the model is not a detector (the dense variant decodes anchors)."""
    require_bioimageio()
    bundle, ckpt, out = Path(bundle_dir) if bundle_dir else default_bundle_dir(), Path(ckpt), Path(out)
    if not ckpt.is_file():
        raise FileNotFoundError(f"--ckpt {ckpt}: no such file (the model.pt a training run writes)")
    metadata = bundle / "configs" / "metadata.json"
    if not metadata.is_file():
        raise FileNotFoundError(f"{metadata}: missing (--bundle: the bundle folder whose metadata fills the packages)")
    name = json.loads(metadata.read_text())["name"]
    existing = [str(p) for p in package_paths(out, name) if p.exists()]
    if existing:
        verb = "exists: remove it" if len(existing) == 1 else "exist: remove them"
        raise FileExistsError(f"{', '.join(existing)} {verb} or choose another --out")
    writer = PackageWriter(ckpt, out, bundle)
    if not hasattr(writer.model, "anchor_shapes"):
        raise ValueError(f"--ckpt {ckpt}: a model of a family without anchors; the dense package exports a detector")
    out.mkdir(parents=True, exist_ok=True)
    labels = writer.predicted_labels()
    try:
        return writer.write_dense(labels) + writer.write_predictor(labels)
    finally:
        for variant in VARIANTS:
            shutil.rmtree(out / f".{name}_{variant}", ignore_errors=True)
