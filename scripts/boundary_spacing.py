"""Boundary family vs imaging resolution: the default command on the membrane generator imaged at several spacings,
at the grid the plan chooses, at the wall-map target alone (no upsampling limit) and at the native grid.

The same generator, counts and seed as the suite's ``membrane`` preset, the same 48 x 48 x 24 µm field of view, 2
training and 3 test volumes per spacing. Each row trains the default ``train.json`` (the plan picks ``boundary``),
with ``--working_spacing`` set for the ``target`` and ``native`` rows, then runs ``inference.json`` and scores the
test volumes. Rows are cached in ``--results`` (a stopped run resumes); ``--only`` reruns chosen rows
(``SPACING:VARIANT``, ``;``-separated, e.g. ``"0.8,0.8,2:plan;1,1,2.5:plan"``). Prints the table and, per spacing,
the plan's Det F1 gain and training-time ratio against the target alone, measured side by side in this run.

    python scripts/boundary_spacing.py [--spacings "0.4,0.4,1;0.8,0.8,2;1,1,2.5"] [--variants plan,target,native]
        [--only "0.8,0.8,2:plan"] [--force] [--seed 0] [--work runs/boundary_spacing]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generalisation import bundle_command, inference_seconds, make_test_folders, run_logged, score  # noqa: E402

from weakseg_monai.data.synthetic import SUITE, write_synthetic_dataset  # noqa: E402
from weakseg_monai.planning import BoundaryPlanner  # noqa: E402
from weakseg_monai.planning.planner import plan_working_spacing  # noqa: E402
from weakseg_monai.utils.machine import cpu_name  # noqa: E402

FIELD_UM = (48.0, 48.0, 24.0)  # the membrane preset's field of view
VARIANTS = ("plan", "target", "native")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spacings", default="0.4,0.4,1;0.8,0.8,2;1,1,2.5", help="native spacings (x,y,z µm; ';')")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {VARIANTS}")
    parser.add_argument("--only", default="", help="';'-separated SPACING:VARIANT rows to (re)run, e.g. 1,1,2.5:plan")
    parser.add_argument("--force", action="store_true", help="rerun rows already in the results file")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "boundary_spacing", help="datasets, runs, logs")
    parser.add_argument("--results", type=Path, default=None, help="row cache (default WORK/results.json)")
    args = parser.parse_args(argv)
    args.spacings = [tuple(float(v) for v in s.split(",")) for s in args.spacings.split(";") if s.strip()]
    if any(len(s) != 3 or min(s) <= 0 for s in args.spacings):
        parser.error(f"--spacings: each must be three positive numbers x,y,z, got {args.spacings}")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(args.variants) - set(VARIANTS):
        parser.error(f"--variants {args.variants}: choose from {VARIANTS}")
    args.results = args.results or args.work / "results.json"
    return args


def spacing_name(spacing: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in spacing)


def write_dataset(spacing: tuple[float, ...], work: Path, seed: int) -> Path:
    """The membrane generator over ``FIELD_UM`` at ``spacing``: ``WORK/SPACING/data`` (written once per seed)."""
    out = work / spacing_name(spacing) / "data"
    stamp = out.parent / "dataset.json"
    wanted = {"spacing": list(spacing), "seed": seed}
    if not (out / "datalist.json").is_file() or not stamp.is_file() or json.loads(stamp.read_text()) != wanted:
        shape = tuple(int(round(e / s)) for e, s in zip(FIELD_UM, spacing))
        print(f"[{spacing_name(spacing)}] writing {shape} voxels to {out}", flush=True)
        write_synthetic_dataset(out, 2, 0, 3, 0.2, seed, shape, spacing, model=SUITE["membrane"].model)
        stamp.write_text(json.dumps(wanted))
    return out


def working_spacing_flag(variant: str, dataset: Path) -> list[str]:
    """The ``--working_spacing`` a variant sets: none for ``plan`` (the default command as it is)."""
    if variant == "plan":
        return []
    planner = BoundaryPlanner(dataset)
    if variant == "target":
        spacing = plan_working_spacing(planner.fingerprint, planner.target_object_voxels, planner.keep_band)
    else:
        spacing = list(planner.fingerprint.spacing_um)
    return ["--working_spacing", json.dumps([round(float(v), 4) for v in spacing])]


def run_row(spacing: tuple[float, ...], variant: str, args: argparse.Namespace) -> dict:
    """Train with the default command (``variant``'s working spacing), infer the test volumes, score."""
    dataset = write_dataset(spacing, args.work, args.seed)
    run_dir = args.work / spacing_name(spacing) / variant
    logs = run_dir.parent / "logs"
    images, gts = make_test_folders(dataset, run_dir)
    train = run_dir / "train"
    cmd = bundle_command("train.json", dataset_dir=dataset, output_dir=train, ckpt_dir=train / "models")
    print(f"[{spacing_name(spacing)}] {variant}: training (log {logs / f'{variant}_train.log'})", flush=True)
    train_s = run_logged(cmd + working_spacing_flag(variant, dataset), logs / f"{variant}_train.log")
    used = json.loads((train / "plan.json").read_text())["used"]
    pred, log = run_dir / "pred", logs / f"{variant}_infer.log"
    cmd = bundle_command("inference.json", input_dir=images, output_dir=pred, ckpt_path=train / "models" / "model.pt")
    wall = run_logged(cmd, log)
    n = len(list(images.iterdir()))
    return {
        **score(gts, pred),
        "working_spacing": used["working_spacing"],
        "patch_size": used["patch_size"],
        "iterations": used["iterations"],
        "train_min": round(train_s / 60, 2),
        "infer_s_per_vol": round(inference_seconds(log, n, wall), 2),
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "seed": args.seed,
    }


def table(results: dict, spacings: list[tuple[float, ...]], variants: list[str]) -> str:
    lines = [
        "| native µm | variant | working µm | Det F1 | Seg F1 | CTC SEG | train min | infer s / vol |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spacing in spacings:
        name = spacing_name(spacing)
        for variant in variants:
            row = results.get(f"{name}:{variant}")
            if row is None:
                lines.append(f"| {name} | {variant} | not run | | | | | |")
                continue
            ws = " x ".join(f"{v:g}" for v in row["working_spacing"])
            lines.append(
                f"| {name} | {variant} | {ws} | {row['det_f1']:.3f} | {row['seg_f1']:.3f} | {row['ctc_seg']:.3f} | "
                f"{row['train_min']:.1f} | {row['infer_s_per_vol']:.1f} |"
            )
        plan, target = results.get(f"{name}:plan"), results.get(f"{name}:target")
        if plan and target:
            lines.append(
                f"| {name} | plan vs target | | {plan['det_f1'] - target['det_f1']:+.3f} | "
                f"{plan['seg_f1'] - target['seg_f1']:+.3f} | | x{plan['train_min'] / target['train_min']:.2f} | |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    only = {r.strip() for r in args.only.split(";") if r.strip()}
    for spacing in args.spacings:
        for variant in args.variants:
            key = f"{spacing_name(spacing)}:{variant}"
            if only and key not in only:
                continue
            if key in results and not args.force and not only:
                print(f"[{key}] cached ({results[key]['date']})", flush=True)
                continue
            results[key] = run_row(spacing, variant, args)
            args.results.write_text(json.dumps(results, indent=2) + "\n")
            print(f"[{key}] Det F1 {results[key]['det_f1']:.3f} in {results[key]['train_min']:.1f} min", flush=True)
    print(table(results, args.spacings, args.variants))


if __name__ == "__main__":
    main()
