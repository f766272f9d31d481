"""Geometry sweep: the default training command on random odd geometries, each planned, trained two iterations and
run through inference as a user would (the bundle's train.json and inference.json), to show nothing crashes.

Cases come from ``weakseg_monai.data.geometry_cases.draw_case`` over volumes of 8-300 voxels per axis and nuclei of
3-40 in-plane voxels (anisotropy up to 8, 1-3 volumes, 0-100% masks). Each case runs in its own process (a crash or
an out-of-memory kill is a row, not the end of the sweep); rows are cached in ``--results`` so a stopped sweep
resumes, and ``--only`` reruns chosen cases. The table is printed and written between ``<!-- geometry:begin -->``
and ``<!-- geometry:end -->`` in ``bundle/docs/results.md``.

    python scripts/geometry_sweep.py [--n 50] [--only case003,case017] [--force] [--work runs/geometry_sweep]
        [--case-timeout 900]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from weakseg_monai.data.geometry_cases import draw_case, write_case  # noqa: E402
from weakseg_monai.utils.machine import cpu_name  # noqa: E402
from weakseg_monai.utils.report import replace_marked_section  # noqa: E402

AXIS_VOX, OBJECT_VOX = (8, 300), (3, 40)
DOC = REPO / "bundle" / "docs" / "results.md"


def bundle_run(config: str, **flags) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(REPO / "bundle" / "configs" / config)]
    cmd += ["--bundle_root", str(REPO / "bundle")]
    for key, value in flags.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def last_error(text: str) -> str:
    """The most telling line of a failed command's output (our own last line, else the last exception line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("weakseg-monai error:")]
    errors = [line for line in lines if "Error" in line.split(":")[0] or line.startswith("RuntimeError")]
    return (ours or errors or lines or ["no output"])[-1][:300]


def run_case(seed: int, work: Path, timeout_s: float = 900.0) -> dict:
    """Write, plan, train 2 iterations and infer one case; a row of what happened (a step running past
    ``timeout_s`` is killed and is a row too: a hang must not stop the sweep)."""
    case = draw_case(seed, AXIS_VOX, OBJECT_VOX)
    folder = work / case.name
    shutil.rmtree(folder, ignore_errors=True)
    row: dict = {"case": case.name, **case.to_dict(), "date": datetime.date.today().isoformat(), "cpu": cpu_name()}
    write_case(case, folder / "data")
    steps = {
        "train": bundle_run(
            "train.json", dataset_dir=folder / "data", output_dir=folder / "train", ckpt_dir=folder / "models",
            iterations=2, val_interval=2,
        ),
        "infer": bundle_run(
            "inference.json", input_dir=folder / "data" / "images", output_dir=folder / "pred",
            ckpt_path=folder / "models" / "model.pt",
        ),
    }
    for name, cmd in steps.items():
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            row[f"{name}_s"] = round(time.perf_counter() - start, 1)
            row["status"] = f"{name} killed after {timeout_s:.0f} s (--case-timeout)"
            return row
        row[f"{name}_s"] = round(time.perf_counter() - start, 1)
        if done.returncode != 0:
            row["status"] = f"{name} failed (exit {done.returncode}): {last_error(done.stdout + done.stderr)}"
            return row
    plan = json.loads((folder / "train" / "plan.json").read_text())
    row.update(
        status="ok",
        working_spacing=plan["used"]["working_spacing"],
        patch_size=plan["used"]["patch_size"],
        anchors=len(plan["used"]["anchor_shapes"]),
        anchor_coverage=plan.get("anchor_coverage"),
        written=len(list((folder / "pred").glob("*_instances.*"))),
    )
    shutil.rmtree(folder, ignore_errors=True)
    return row


def table(results: dict) -> str:
    columns = ["case", "volumes (x, y, z)", "spacing µm", "object vox", "masks", "working spacing", "patch",
               "anchors (face-cut / face-cut mirrored / whole anchored)", "train s", "infer s", "status"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name in sorted(results):
        r = results[name]
        cov = r.get("anchor_coverage") or {}
        anchored = " / ".join(
            "-" if cov.get(k) is None else f"{100 * cov[k]:.0f}%" for k in ("face_cut", "face_cut_mirrored", "whole")
        )
        lines.append(
            f"| {name} | {' '.join('x'.join(map(str, s)) for s in r['shapes'])} | "
            f"{' x '.join(f'{v:g}' for v in r['spacing'])} | {r['object_vox']} | {r['mask_fraction']:.0%} | "
            f"{' x '.join(f'{v:g}' for v in r.get('working_spacing', [])) or '-'} | "
            f"{'x'.join(map(str, r.get('patch_size', []))) or '-'} | {r.get('anchors', '-')} ({anchored}) | "
            f"{r.get('train_s', '-')} | {r.get('infer_s', '-')} | {r['status']} |"
        )
    ok = sum(r["status"] == "ok" for r in results.values())
    cpus = ", ".join(sorted({r["cpu"] for r in results.values()}))
    return "\n".join(lines) + (
        f"\n\n{ok} of {len(results)} cases planned, trained 2 iterations and inferred without error "
        f"(`python scripts/geometry_sweep.py --n {len(results)}`; machine: {cpus}). Volumes of {AXIS_VOX[0]}-"
        f"{AXIS_VOX[1]} voxels per axis, nuclei of {OBJECT_VOX[0]}-{OBJECT_VOX[1]} in-plane voxels; train s includes "
        "the one validation round of an untrained model."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="cases (seeds 0..n-1)")
    parser.add_argument("--only", default="", help="comma-separated case names (caseNNN) or seeds")
    parser.add_argument("--force", action="store_true", help="rerun cached cases")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "geometry_sweep")
    parser.add_argument("--results", type=Path, default=REPO / "runs" / "geometry_sweep.json")
    parser.add_argument("--no-doc", action="store_true", help=f"do not write the table into {DOC.name}")
    parser.add_argument("--case-timeout", type=float, default=900.0, help="seconds per step before it is killed")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(run_case(args.worker, args.work, args.case_timeout)))
        return
    wanted = [w.strip().removeprefix("case") for w in args.only.split(",") if w.strip()]
    seeds = [int(w) for w in wanted] if wanted else list(range(args.n))
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for seed in seeds:
        name = f"case{seed:03d}"
        if name in results and not args.force and not wanted:
            continue
        print(f"[{name}] {draw_case(seed, AXIS_VOX, OBJECT_VOX)}", flush=True)
        cmd = [sys.executable, __file__, "--worker", str(seed), "--work", str(args.work)]
        cmd += ["--case-timeout", str(args.case_timeout)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        try:
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            case = draw_case(seed, AXIS_VOX, OBJECT_VOX)
            results[name] = {**case.to_dict(), "case": name, "cpu": cpu_name(),
                             "status": f"worker died (exit {done.returncode}): {last_error(done.stderr)}"}
        print(f"[{name}] {results[name]['status']}", flush=True)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    print(text)
    if not args.no_doc:
        replace_marked_section(DOC, "geometry", text)
        print(f"wrote the geometry section of {DOC}")


if __name__ == "__main__":
    main()
