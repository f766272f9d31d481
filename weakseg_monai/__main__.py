"""Command line: ``python -m weakseg_monai <command>`` (``synth``, ``validate``).

Built on ``fire`` (which MONAI brings). Flags may be written ``--n-train`` or ``--n_train``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import fire


def synth(
    out: str,
    n_train: int = 13,
    n_val: int = 4,
    n_test: int = 20,
    mask_fraction: float = 0.2,
    seed: int = 0,
    spacing: tuple = (0.5, 0.5, 1.0),
    shape: tuple = (128, 128, 32),
    large: bool = False,
    file_format: str = "nii.gz",
    preview: bool = False,
) -> None:
    """Write a synthetic HL60-like weak-annotation dataset to OUT.

    --spacing and --shape are (x, y, z), e.g. ``--spacing "(0.5,0.5,1.0)"``. ``--large`` writes the paper's
    timing case instead of the default stacks: 649 x 639 x 64 voxels at 0.125 x 0.125 x 0.2 µm, ~20 nuclei.
    ``--preview`` also writes OUT/preview.png (xy / xz max projections of the first training stack).
    """
    from weakseg_monai.data import synthetic
    from weakseg_monai.data.datalist import read_datalist, resolve_paths
    from weakseg_monai.data.io import read_volume

    n_cells = (10, 40)
    if large:
        shape, spacing, n_cells = synthetic.LARGE_SHAPE, synthetic.LARGE_SPACING, (18, 24)
    path = synthetic.write_synthetic_dataset(
        out, n_train, n_val, n_test, mask_fraction, seed, tuple(shape), tuple(spacing), n_cells, file_format
    )
    print(f"wrote {path}")
    if preview:
        from weakseg_monai.data.preview import save_preview

        data = read_datalist(out)
        first = next(iter(data.get("training") or data.get("validation") or data.get("test") or []), None)
        if first is None:
            print("no items: no preview written")
            return
        item = resolve_paths(first, Path(out))
        png = save_preview(
            Path(out) / "preview.png",
            read_volume(item["image"]),
            read_volume(item["gt_instances"]),
            item["spacing"],
            f"{first['id']}: {len(first['box'])} nuclei, outlines = ground truth",
        )
        print(f"wrote {png}")


def validate(dataset_dir: str, quiet: bool = False) -> None:
    """Check a dataset folder (or datalist file); exit code 1 when any error is found."""
    from weakseg_monai.data.validate import validate_dataset

    report = validate_dataset(dataset_dir)
    text = report.format()
    if quiet:
        text = text.splitlines()[0]
    print(text)
    if not report.ok:
        sys.exit(1)


COMMANDS = {"synth": synth, "validate": validate}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fire.Fire(COMMANDS)


if __name__ == "__main__":
    main()
