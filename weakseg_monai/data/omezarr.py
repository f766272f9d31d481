"""OME-Zarr volumes (folders ``NAME.ome.zarr`` / ``NAME.zarr``) in the project's (x, y, z) order, with their spacing.

Reading is lazy: ``open_zarr`` gives a dask array of the full-resolution level (no voxel is read until computed) and
the spacing in µm from the multiscales metadata (``coordinateTransformations`` scale, axis units), for OME-NGFF 0.4
(zarr v2) and 0.5 (zarr v3). Axes other than space (time, channel) must be of size 1 (a volume is one channel at one
time point). A store that holds no image but a ``labels/`` group (what we write for predictions) reads as its first
label image.

Writing (``write_zarr_labels``) gives what napari-ome-zarr shows as labels: a ``labels/<name>`` multiscale group
(OME-NGFF 0.5, zarr v3; full resolution ``s0``, then y / x halved by nearest neighbour down to ``MIN_LEVEL_SIZE``),
with the spacing as each level's scale. ``ome-zarr``'s own reader and writer are used; the plain-zarr metadata read
here is what ``ome_zarr.reader`` does, minus its graph of nodes. Needs the optional ``[scale]`` extra
(``zarr``, ``ome-zarr``, ``dask``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from weakseg_monai.conventions import SPATIAL_AXES, as_spacing, um_per_unit

ZARR_SUFFIXES = (".ome.zarr", ".zarr")
LABELS_NAME = "instances"
MIN_LEVEL_SIZE = 64  # downsampled levels stop when y or x would fall under this
CHUNKS_ZYX = (32, 256, 256)
UNIT = "micrometer"


def is_zarr(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(".zarr")


def require_zarr() -> None:
    """Fail with what to install when the optional ``[scale]`` extra is missing."""
    try:
        import dask.array  # noqa: F401
        import ome_zarr  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            f"OME-Zarr needs the [scale] extra ({err.name} is missing): pip install -e \".[scale]\" in the source "
            "repository, or pip install zarr==3.1.6 ome-zarr==0.18.0 'dask[array]==2026.8.0'"
        ) from None


def multiscales_group(path: Path):
    """The zarr group holding the multiscales of ``path`` (the image, else its first label image) and its
    multiscales entry."""
    import zarr

    require_zarr()
    if not path.is_dir():
        raise FileNotFoundError(f"no such OME-Zarr folder: {path}")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - zarr raises several types for a folder that is no store
        raise OSError(f"{path}: not a zarr store ({err})") from None
    meta = metadata(group)
    if "multiscales" not in meta and "labels" in group:
        names = metadata(group["labels"]).get("labels") or sorted(group["labels"].group_keys())
        if names:
            group = group["labels"][names[0]]
            meta = metadata(group)
    if "multiscales" not in meta:
        raise ValueError(f"{path}: no OME-Zarr image (no 'multiscales' metadata, no labels)")
    return group, meta["multiscales"][0]


def metadata(group) -> dict:
    """OME metadata of a group: under ``ome`` (NGFF 0.5) or the attributes themselves (0.4)."""
    attrs = group.attrs.asdict()
    return attrs.get("ome", attrs)


def transform_scale(entry: dict, n_axes: int) -> list[float]:
    """The ``scale`` of an entry's ``coordinateTransformations`` (ones when it has none)."""
    transforms = entry.get("coordinateTransformations") or []
    return next((list(t["scale"]) for t in transforms if t.get("type") == "scale"), [1.0] * n_axes)


def open_zarr(path: str | Path):
    """``(volume, spacing)``: the full-resolution level as a lazy dask array in (x, y, z) order, and its (x, y, z)
    spacing in µm."""
    levels, spacing = open_zarr_levels(path)
    return levels[0], spacing


def open_zarr_levels(path: str | Path, labels: str | None = None):
    """``(levels, spacing)``: every resolution level (full resolution first) as lazy dask arrays in (x, y, z)
    order, and the full-resolution (x, y, z) spacing in µm (what a multiscale napari layer takes). ``labels``: the
    label image ``path/labels/<labels>`` instead of the image."""
    import dask.array as da
    import zarr

    path = Path(path)
    if labels is None:
        group, multiscales = multiscales_group(path)
    else:
        require_zarr()
        group = zarr.open_group(str(path / "labels" / labels), mode="r")
        multiscales = metadata(group)["multiscales"][0]
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscales["axes"]]
    names = [str(a["name"]).lower() for a in axes]
    if not set(SPATIAL_AXES) <= set(names):
        raise ValueError(f"{path}: axes {names} lack one of x, y, z (a 3D volume is needed)")
    levels = []
    for dataset in multiscales["datasets"]:
        array = da.from_zarr(group[dataset["path"]])
        index = []
        for name, size in zip(names, array.shape):
            if name in SPATIAL_AXES:
                index.append(slice(None))
            elif size == 1:
                index.append(0)
            else:
                raise ValueError(
                    f"{path}: axis {name!r} has {size} entries; a volume is one channel at one time point (split it)"
                )
        spatial = [n for n in names if n in SPATIAL_AXES]
        levels.append(array[tuple(index)].transpose([spatial.index(a) for a in SPATIAL_AXES]))
    dataset = multiscales["datasets"][0]
    scale = np.asarray(transform_scale(dataset, len(names)))
    scale = scale * np.asarray(transform_scale(multiscales, len(names)))  # NGFF: a multiscales-wide transform too
    spacing = [
        float(scale[names.index(a)]) * um_per_unit(axes[names.index(a)].get("unit") or UNIT, path) for a in SPATIAL_AXES
    ]
    return levels, as_spacing(spacing)


def read_zarr_xyz(path: str | Path) -> np.ndarray:
    """The whole full-resolution volume, (x, y, z), in memory."""
    return np.asarray(open_zarr(path)[0].compute())


def zarr_spacing(path: str | Path) -> tuple[float, float, float]:
    return open_zarr(path)[1]


def zarr_shape(path: str | Path) -> tuple[int, int, int]:
    return tuple(int(s) for s in open_zarr(path)[0].shape)  # type: ignore[return-value]


def open_labels(path: str | Path, name: str = LABELS_NAME):
    """The full-resolution level of ``path/labels/<name>`` (what ``write_zarr_labels`` writes) as a lazy dask array
    in (x, y, z) order."""
    return open_zarr_levels(path, labels=name)[0][0]


def level_factors(shape_zyx: Sequence[int]) -> list[dict[str, int]]:
    """The y / x halvings of the pyramid: while both stay at least ``MIN_LEVEL_SIZE``."""
    factors, size = [], min(shape_zyx[1], shape_zyx[2])
    while size // 2 ** (len(factors) + 1) >= MIN_LEVEL_SIZE:
        factors.append({"y": 2 ** (len(factors) + 1), "x": 2 ** (len(factors) + 1)})
    return factors


def write_zarr(path: str | Path, volume, spacing: Sequence[float], labels: str | None = None) -> Path:
    """Write an (x, y, z) volume (numpy or dask; a dask array block by block) as a new OME-Zarr ``path``: the image
    itself, or with ``labels`` the label image ``path/labels/<labels>`` (nearest-neighbour levels), which is what
    napari-ome-zarr shows as labels. ``path`` must not exist."""
    import dask.array as da
    import zarr
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image, write_labels

    require_zarr()
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists")
    spacing = as_spacing(spacing)
    zyx = volume.transpose(2, 1, 0)
    chunks = tuple(min(c, s) for c, s in zip(CHUNKS_ZYX, zyx.shape))
    zyx = zyx.rechunk(chunks) if isinstance(zyx, da.Array) else da.from_array(np.ascontiguousarray(zyx), chunks)
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    geometry = {
        "axes": "zyx",
        "scale": {"z": spacing[2], "y": spacing[1], "x": spacing[0]},
        "axes_units": {a: UNIT for a in "zyx"},
        "scale_factors": level_factors(zyx.shape),
        "storage_options": {"chunks": chunks},
    }
    if labels is None:
        write_image(zyx, root, method=Methods.NEAREST if zyx.dtype.kind in "iub" else Methods.RESIZE, **geometry)
    else:  # ome-zarr's default Scaler would override scale_factors
        write_labels(zyx, root, name=labels, scaler=None, method=Methods.NEAREST, **geometry)
        group = root["labels"]  # ome-zarr 0.18 leaves out the version NGFF 0.5 asks of the labels group
        group.attrs["ome"] = {"version": "0.5", **metadata(group)}
        root.attrs["ome"] = {"version": "0.5"}
    return path


def write_zarr_labels(path: str | Path, labels, spacing: Sequence[float], name: str = LABELS_NAME) -> Path:
    """``write_zarr(path, labels, spacing, labels=name)``: a prediction's label volume."""
    return write_zarr(path, labels, spacing, labels=name)
