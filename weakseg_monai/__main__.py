"""Command line: ``python -m weakseg_monai <command>`` (``synth``, ``validate``, ``plan``, ``score``, ``budget``,
``from-ctc``, ``to-ctc``, ``export-bundle``, ``export-bioimageio``).

Built on ``fire`` (which MONAI brings). Flags may be written ``--n-train`` or ``--n_train``. A command that fails
on its input prints one line saying what is wrong (exit code 1); ``--debug`` (or ``WEAKSEG_MONAI_DEBUG=1``) shows
the traceback too.
"""

from __future__ import annotations

import functools
import logging
import os
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
    overwrite: bool = False,
) -> None:
    """Write a synthetic HL60-like weak-annotation dataset to OUT.

    --spacing and --shape are (x, y, z), e.g. ``--spacing "(0.5,0.5,1.0)"``. ``--large`` writes the paper's
    timing case instead of the default stacks: 649 x 639 x 64 voxels at 0.125 x 0.125 x 0.2 µm, ~20 nuclei.
    ``--preview`` also writes OUT/preview.png (xy / xz max projections of the first training stack).
    OUT must be empty or new unless ``--overwrite`` (a dataset folder is never replaced by accident).
    """
    from weakseg_monai.conventions import as_count, as_fraction, as_size, as_spacing
    from weakseg_monai.data import synthetic
    from weakseg_monai.data.datalist import read_datalist, resolve_paths
    from weakseg_monai.data.io import read_volume

    out = str(out)
    n_train, n_val, n_test = (as_count(v, f"--{k}", minimum=0) for v, k in
                              ((n_train, "n-train"), (n_val, "n-val"), (n_test, "n-test")))
    if n_train + n_val + n_test == 0:
        raise ValueError("--n-train, --n-val and --n-test are all 0: nothing to write")
    mask_fraction = as_fraction(mask_fraction, "--mask-fraction")
    shape = as_size(shape, "--shape")
    if min(shape) < 8:
        raise ValueError(f"--shape must be at least 8 voxels per axis (x, y, z), got {shape}")
    try:
        spacing = as_spacing(spacing)
    except (TypeError, ValueError):
        raise ValueError(f"--spacing must be three positive numbers (x, y, z) in µm, got {spacing!r}") from None
    if Path(out).exists() and any(Path(out).iterdir()) and not overwrite:
        print(f"{out} is not empty: refusing to write a dataset over it (pass --overwrite to replace its files)")
        sys.exit(2)
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

    report = validate_dataset(str(dataset_dir))
    text = report.format()
    if quiet:
        text = text.splitlines()[0]
    print(text)
    if not report.ok:
        sys.exit(1)


def plan(dataset_dir: str, out: str = "", family: str = "") -> None:
    """Print the training plan that ``train.json`` derives for DATASET_DIR (fingerprint + planned values),
    without training. ``--out FILE`` also writes it as JSON (never into the dataset folder by default);
    ``--family``: the plan of another family than the one the data asks for (``nuclei``, ``boundary``, or
    ``baseline``: ``train_baseline.json``'s)."""
    import json

    from weakseg_monai.data.validate import check_dataset
    from weakseg_monai.planning import ExperimentPlanner, format_plan

    dataset_dir = str(dataset_dir)
    check_dataset(dataset_dir, read_volumes=False, require_training=True)
    data = ExperimentPlanner(dataset_dir)
    planner = data.for_family(str(family or data.model_family()))
    report = planner.report(planner.planned())
    print(f"training plan for {dataset_dir}\n{format_plan(report)}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print("override any planned value on the training command line, e.g. --working_spacing \"[0.3,0.3,0.6]\"")
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")


def score(gt: str, pred: str, out: str = "") -> None:
    """Score predicted label volumes in PRED against ground truth in GT (det F1, seg F1, CTC SEG / DET).

    Files pair by name (``NAME_instances.*`` or ``NAME.*`` for ``NAME[_gt].*``); the JSON goes to ``--out``
    (default PRED/scores.json).
    """
    import json

    from weakseg_monai.metrics.scoring import score_folders

    gt, pred = str(gt), str(pred)
    result = score_folders(gt, pred)
    columns = list(result["items"][0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in result["items"] + [dict(result["mean"], id="mean")]:
        print("| " + " | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns) + " |")
    out_path = Path(out) if out else Path(pred) / "scores.json"
    out_path.write_text(json.dumps(result, indent=4))
    print(f"wrote {out_path}")


def budget(dataset_dir: str, mask_fraction: float = 0.2, mask_cost: float = 30.0, box_cost: float = 1.0) -> None:
    """Annotation time units of the weak training set vs full masks, and the matched-time baseline subset."""
    from weakseg_monai.conventions import as_fraction
    from weakseg_monai.data.budget import annotation_budget

    mask_fraction = as_fraction(mask_fraction, "--mask-fraction")
    for name, value in (("--mask-cost", mask_cost), ("--box-cost", box_cost)):
        as_fraction(value, name, 0.0, float("inf"))
    b = annotation_budget(str(dataset_dir), mask_fraction, float(mask_cost), float(box_cost))
    print(f"training stacks: {b['stacks']}, cells: {b['cells']} (box = {box_cost}, mask = {mask_cost} units)")
    print(f"weak set (all boxes + {mask_fraction:.0%} masks): {b['weak_cost']:.0f} units")
    print(f"full masks: {b['full_cost']:.0f} units (weak / full = {b['weak_over_full']:.3f})")
    print(
        f"matched-time baseline: first {b['matched_k']} of {b['stacks']} stacks with full masks "
        f"({b['matched_cost']:.0f} units): {', '.join(b['matched_ids'])}"
    )


def from_ctc(
    root: str, out: str, mask_fraction: float = 0.2, seed: int = 0, spacing: tuple = (0.125, 0.125, 0.2)
) -> None:
    """Convert a Cell Tracking Challenge folder (01/t000.tif, 01_GT/SEG/man_seg000.tif) with the paper's split."""
    from weakseg_monai.conventions import as_fraction, as_spacing
    from weakseg_monai.data.ctc import from_ctc as convert

    spacing = as_spacing(spacing)
    print(f"wrote {convert(str(root), str(out), as_fraction(mask_fraction, '--mask-fraction'), seed, spacing)}")


def to_ctc(pred: str, out: str, sequence: str = "01") -> None:
    """Write *_instances predictions of frames tTTT as OUT/<sequence>_RES/maskTTT.tif + res_track.txt."""
    from weakseg_monai.data.ctc import to_ctc as convert

    print(f"wrote {convert(str(pred), str(out), str(sequence))}")


def export_bundle(out: str, bundle: str = "") -> None:
    """Write the bundle as a zoo-ready folder OUT/weakseg_nuclei_3d/ (default source: this checkout's bundle/)."""
    from weakseg_monai.utils.zoo import export_bundle as export

    print(f"wrote {export(str(out), str(bundle) if bundle else None)}")


def export_bioimageio(ckpt: str = "", out: str = "bioimageio", bundle: str = "") -> None:
    """Write the model as two bioimage.io packages (folder + zip each) in OUT: ``<name>_dense`` (TorchScript dense
    network: deepImageJ and other Java consumers) and ``<name>_predictor`` (the whole predictor, instance labels:
    bioimageio.core, napari, ilastik). Default --ckpt: this checkout's bundle/models/model.pt. Needs the
    [bioimageio] extra."""
    from weakseg_monai.bioimageio.package import export_bioimageio as export
    from weakseg_monai.utils.zoo import default_bundle_dir

    source = Path(bundle) if bundle else default_bundle_dir()
    for path in export(ckpt or source / "models" / "model.pt", out, source):
        print(f"wrote {path}")


COMMANDS = {
    "synth": synth,
    "validate": validate,
    "plan": plan,
    "score": score,
    "budget": budget,
    "from-ctc": from_ctc,
    "to-ctc": to_ctc,
    "export-bundle": export_bundle,
    "export-bioimageio": export_bioimageio,
}


DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "WEAKSEG_MONAI_DEBUG"
# what a command raises on a bad input or a failed file: one line, not a traceback (fire's own usage errors exit 2)
USER_ERRORS = (ValueError, OSError, KeyError, RuntimeError, TypeError)


def _one_line_errors(command, debug: bool):
    """``command`` whose ``USER_ERRORS`` print ``error: <message>`` and exit 1 (with ``debug``: raised as they are)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as err:
            if debug:
                raise
            message = str(err).strip() or type(err).__name__
            print(f"error: {message}", file=sys.stderr)
            print(f"(run with {DEBUG_FLAG} for the traceback)", file=sys.stderr)
            sys.exit(1)

    return run


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    debug = DEBUG_FLAG in sys.argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    if DEBUG_FLAG in sys.argv:
        sys.argv.remove(DEBUG_FLAG)
    fire.Fire({name: _one_line_errors(command, debug) for name, command in COMMANDS.items()})


if __name__ == "__main__":
    main()
