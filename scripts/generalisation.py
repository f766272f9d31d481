"""Generalisation benchmark: our default bundle command on every dataset of the synthetic suite, and StarDist 3D.

Per dataset of ``weakseg_monai.data.synthetic.SUITE`` (``--only NAME[,NAME]``, default all):

1. writes it with ``write_suite_dataset`` under ``--work`` (training + 3 test volumes, no validation section);
2. runs our default commands exactly as a user would, each in a subprocess logged to ``WORK/NAME/logs/``::

       python -m monai.bundle run --config_file bundle/configs/train.json --bundle_root bundle \\
           --dataset_dir D --output_dir O --ckpt_dir O/models [--extra flags]
       python -m monai.bundle run --config_file bundle/configs/inference.json --bundle_root bundle \\
           --input_dir T --output_dir P --ckpt_path O/models/model.pt

   (T holds only the test images); then the same with ``--mask_fraction 0.0`` (boxes only: the planned
   box-supervised mask loss teaches the masks), unless ``--no-boxes``;
3. scores P against the test ``gt_instances`` (``weakseg_monai.metrics.scoring.score_folders``): Det F1,
   Seg F1, CTC SEG, training wall time, inference seconds per volume (from the inference log);
4. optional peer: StarDist 3D trained on the FULL masks (``gt_instances``) of the same training volumes, its
   default ``Config3D`` with ``grid`` / ``anisotropy`` from the data, ``Rays_GoldenSpiral(96)``, no
   tensorboard, a patch size that fits the volume, stopped after ``--peer-minutes`` of wall time, the probability
   threshold optimised on the training volumes at NMS 0.4 (there is no validation; the search is bounded, see
   ``optimise_stardist_thresholds``), scored the same way. Needs
   ``pip install -e .[peers]`` (tensorflow-cpu, stardist); it runs in its own subprocess (this script with
   ``--stardist-worker``), StarDist's (z, y, x) arrays are transposed at that edge only.

Rows are cached in ``--results`` (JSON); a method already done for a dataset with the same flags is skipped
unless ``--force``, so a stopped run resumes; ``--methods ours_boxes --force`` reruns one method only (after a
change to what it trains). The markdown table is printed and written between
``<!-- generalisation:begin -->`` and ``<!-- generalisation:end -->`` in ``bundle/docs/results.md``.

Real data: the stardist 0.9.2 wheel (BSD-3-Clause) ships ``stardist/data/images/img3d.tif`` + ``mask3d.tif``
(``stardist.data.test_image_nuclei_3d(return_mask=True)``, offline), but its docstring calls it "synthetic
nuclei": a 31 x 61 x 57 (z, y, x) crop with 51 labels and no voxel size. It is not real data, so there is no
``stardist-sample`` entry; csbdeep and scikit-image wheels ship no annotated 3D volume either.

    python scripts/generalisation.py [--only crowd,membrane] [--work runs/generalisation] [--force]
        [--methods ours,ours_boxes,stardist] [--peer-minutes 15] [--no-peer] [--no-boxes] [--extra "--epochs 5"]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from weakseg_monai.data.datalist import load_section  # noqa: E402
from weakseg_monai.data.io import read_volume, resolve_spacing, write_volume  # noqa: E402
from weakseg_monai.data.synthetic import SUITE, write_suite_dataset  # noqa: E402
from weakseg_monai.metrics.scoring import score_folders  # noqa: E402
from weakseg_monai.utils.machine import cpu_name  # noqa: E402
from weakseg_monai.utils.report import replace_marked_section  # noqa: E402

BUNDLE = REPO / "bundle"
DOC = BUNDLE / "docs" / "results.md"
SECTION = "generalisation"  # the <!-- generalisation:begin --> ... <!-- generalisation:end --> block of DOC
NOT_INSTALLED = "not run (pip install -e .[peers])"
# ours_boxes: the same default command with --mask_fraction 0.0; classical: no training, membrane_ceiling.py's
# seeded watershed of the raw image (wall-distance maxima as seeds), on every dataset it is asked for
METHODS = ("ours", "ours_boxes", "stardist", "classical")
BOXES_ONLY = "--mask_fraction 0.0"
OURS_MINUTES, EXTRA_MINUTES = 6.0, 1.0  # per dataset, 2 cores: training (3.5-6.6 min measured); data, inference, score


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help=f"comma-separated datasets (default all: {','.join(SUITE)})")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "generalisation", help="datasets, runs, logs")
    parser.add_argument(
        "--results", type=Path, default=BUNDLE / "docs" / "generalisation_results.json", help="cached rows (JSON)"
    )
    parser.add_argument("--force", action="store_true", help="rerun datasets already in the results file")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated methods (default all: {','.join(METHODS)})"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--peer-minutes", type=float, default=15.0, help="StarDist training wall-clock budget")
    parser.add_argument("--no-peer", action="store_true", help="skip StarDist even when it is installed")
    parser.add_argument("--no-boxes", action="store_true", help="skip the boxes-only run of our default command")
    parser.add_argument(
        "--extra", default="", help='extra flags for our training, e.g. --extra="--iterations 50" (marked in the table)'
    )
    parser.add_argument("--no-doc", action="store_true", help=f"do not write the table into {DOC.name}")
    parser.add_argument("--stardist-worker", nargs=2, metavar=("DATASET", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(selected(args.only)) - set(SUITE))
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {list(SUITE)}")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or set(args.methods) - set(METHODS):
        parser.error(f"--methods {args.methods}: choose from {list(METHODS)}")
    return args


def selected(only: str) -> list[str]:
    return [n.strip() for n in only.split(",") if n.strip()] or list(SUITE)


def peer_installed() -> bool:
    """StarDist and TensorFlow importable (found without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("stardist", "tensorflow"))


# ---------------------------------------------------------------- data


def prepare_dataset(name: str, work: Path, seed: int, force: bool) -> Path:
    """The dataset folder ``WORK/NAME/data``, (re)written when absent, of another seed, or with ``force``."""
    out, stamp = work / name / "data", work / name / "dataset.json"
    wanted = {"name": name, "seed": seed}
    if force or not (out / "datalist.json").is_file() or not stamp.is_file() or json.loads(stamp.read_text()) != wanted:
        shutil.rmtree(out, ignore_errors=True)
        print(f"[{name}] writing the dataset to {out}", flush=True)
        write_suite_dataset(name, out, seed=seed)
        stamp.write_text(json.dumps(wanted))
    return out


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copy2(source, target)


def make_test_folders(dataset: Path, run_dir: Path) -> tuple[Path, Path]:
    """``run_dir/test_images`` (only the test images) and ``run_dir/test_gt`` (their ground truth)."""
    images, gts = run_dir / "test_images", run_dir / "test_gt"
    for folder in (images, gts):
        shutil.rmtree(folder, ignore_errors=True)
    for item in load_section(dataset, "test"):
        link_or_copy(Path(item["image"]), images / Path(item["image"]).name)
        link_or_copy(Path(item["gt_instances"]), gts / Path(item["gt_instances"]).name)
    return images, gts


def dataset_stats(dataset: Path) -> dict:
    """Training volumes, objects (boxes) and objects with a voxel mask."""
    items = load_section(dataset, "training")
    return {
        "train_volumes": len(items),
        "objects": sum(len(i["box"]) for i in items),
        "masked": sum(int(np.sum(i.get("mask_annotated", []))) for i in items),
    }


SCORES = ("det_f1", "seg_f1", "ctc_seg", "recall_face_cut", "recall_whole")


def score(gt_dir: Path, pred_dir: Path) -> dict:
    """Mean Det F1, Seg F1 and CTC SEG over the test volumes, and the detection recall of the objects a volume
    face cuts and of the whole ones (pooled over the volumes; NaN where there are none)."""
    mean = score_folders(gt_dir, pred_dir)["mean"]
    return {key: round(mean[key], 4) for key in SCORES}


# ---------------------------------------------------------------- ours


def run_logged(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` in the repository with stdout + stderr to ``log``; wall seconds, or raise with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        code = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"exit code {code} after {seconds:.0f} s, see {log}:\n{tail}")
    return seconds


def bundle_command(config: str, **flags: str) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"bundle/configs/{config}"]
    cmd += ["--bundle_root", "bundle"]
    for key, value in flags.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def inference_seconds(log: Path, n_volumes: int, wall: float) -> float:
    """Mean per-volume time the inference log reports (``N instances in S s``), else wall time / volumes."""
    times = [float(t) for t in re.findall(r"\d+ instances in ([0-9.]+) s", log.read_text(errors="replace"))]
    return float(np.mean(times)) if len(times) == n_volumes else wall / max(n_volumes, 1)


def train_ours(dataset: Path, run_dir: Path, args: argparse.Namespace, extra: str) -> float:
    """Train with the default bundle command; a finished training of the same data and flags is reused."""
    out = run_dir / "train"
    marker, wanted = out / "generalisation_train.json", {"extra": extra, "seed": args.seed}
    if not args.force and marker.is_file() and (out / "models" / "model.pt").is_file():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in wanted} == wanted:
            return float(done["seconds"])
    shutil.rmtree(out, ignore_errors=True)
    cmd = bundle_command("train.json", dataset_dir=dataset, output_dir=out, ckpt_dir=out / "models")
    seconds = run_logged(cmd + shlex.split(extra), run_dir.parent / "logs" / f"{run_dir.name}_train.log")
    marker.write_text(json.dumps({"seconds": seconds, **wanted}))
    return seconds


def run_ours(name: str, dataset: Path, args: argparse.Namespace, method: str = "ours") -> dict:
    """Train, predict the test images, score: one ``ours`` (or ``ours_boxes``: boxes only) row."""
    work = args.work
    run_dir = work / name / method
    images, gts = make_test_folders(dataset, run_dir)
    print(f"[{name}] {method}: training (log {work / name / 'logs' / f'{method}_train.log'})", flush=True)
    train_s = train_ours(dataset, run_dir, args, method_flags(method, args))
    pred = run_dir / "pred"
    shutil.rmtree(pred, ignore_errors=True)
    log = work / name / "logs" / f"{method}_infer.log"
    print(f"[{name}] {method}: inference (log {log})", flush=True)
    cmd = bundle_command(
        "inference.json", input_dir=images, output_dir=pred, ckpt_path=run_dir / "train" / "models" / "model.pt"
    )
    wall = run_logged(cmd, log)
    n = len(list(images.iterdir()))
    return {**score(gts, pred), "train_min": train_s / 60, "infer_s_per_vol": inference_seconds(log, n, wall)}


# ---------------------------------------------------------------- StarDist peer


def run_stardist(name: str, dataset: Path, work: Path, minutes: float) -> dict:
    """The StarDist row: train + predict in a worker subprocess, then score like ours."""
    run_dir = work / name / "stardist"
    _, gts = make_test_folders(dataset, run_dir)
    shutil.rmtree(run_dir / "pred", ignore_errors=True)
    (run_dir / "timing.json").unlink(missing_ok=True)
    log = work / name / "logs" / "stardist.log"
    print(f"[{name}] StarDist: {minutes:g} min training budget (log {log})", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stardist-worker", str(dataset), str(run_dir)]
    run_logged(cmd + ["--peer-minutes", str(minutes)], log)
    timing = json.loads((run_dir / "timing.json").read_text())
    return {**score(gts, run_dir / "pred"), **timing}


def stardist_patch_size(shape_zyx: tuple[int, ...], div_by: tuple[int, ...], default: int = 128) -> tuple[int, ...]:
    """Config3D's default 128^3 patch, shrunk to fit the smallest volume and divisible by the network's factor."""
    return tuple(max(d, min(default, s) // d * d) for s, d in zip(shape_zyx, div_by))


def wall_clock_stop(seconds: float):
    """A Keras callback that stops training once ``seconds`` of wall time have passed."""
    from csbdeep.utils.tf import keras_import

    callback_base = keras_import("callbacks", "Callback")

    class WallClockStop(callback_base):
        def __init__(self) -> None:
            super().__init__()
            self.deadline = time.monotonic() + seconds
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.steps += 1
            if time.monotonic() >= self.deadline:
                self.model.stop_training = True

    return WallClockStop()


def stardist_data(dataset: Path, section: str, labels: bool = True) -> tuple[list, list, list[dict]]:
    """Normalised images and label volumes of a section in StarDist's (z, y, x) order, and the items."""
    from csbdeep.utils import normalize
    from stardist import fill_label_holes

    items = load_section(dataset, section)
    images = [normalize(read_volume(i["image"]).astype(np.float32).T, 1, 99.8) for i in items]
    masks = [fill_label_holes(read_volume(i["gt_instances"]).astype(np.int32).T) for i in items] if labels else []
    return images, masks, items


STARDIST_CANDIDATE_CAP = 30_000  # NMS candidates per volume at the lowest probability threshold tried


def optimise_stardist_thresholds(model, images: list, labels: list) -> None:
    """StarDist's own probability-threshold search, bounded in time.

    Two departures from ``model.optimize_thresholds``: one NMS value (StarDist's default, 0.4) instead of three
    (the three-way search alone took ~30 min per dataset on 2 cores), and the search's lower end raised so no
    volume has more than ``STARDIST_CANDIDATE_CAP`` candidates there. StarDist starts at half the highest
    probability; a model that learned little (membrane: probabilities flat around the middle) then hands its NMS
    nearly every voxel, and one step ran for more than 11 minutes. The raise is printed when it applies.
    """
    from stardist.models.base import optimize_threshold

    yhat = [model.predict(x, n_tiles=model._guess_n_tiles(x), show_tile_progress=False)[:2] for x in images]
    high = max(float(np.max(prob)) for prob, _ in yhat)
    low = high / 2
    # the probability above which each volume keeps at most the cap's number of candidates
    cap = STARDIST_CANDIDATE_CAP
    capped = max([float(np.partition(p, -cap - 1, axis=None)[-cap - 1]) for p, _ in yhat if p.size > cap] or [low])
    if capped > low:
        print(f"threshold search starts at {capped:.3f} instead of {low:.3f}: candidate cap {STARDIST_CANDIDATE_CAP}")
        low = min(capped, high)
    prob, _ = optimize_threshold(labels, yhat, model, nms_thresh=0.4, bracket=(low, high))
    model.thresholds = {"prob": float(prob), "nms": 0.4}
    print(f"StarDist thresholds: prob {prob:.3f}, nms 0.4 (search from {low:.3f} to {high:.3f})", flush=True)


def stardist_worker(dataset: Path, out: Path, minutes: float) -> None:
    """Train StarDist 3D on the full training masks for ``minutes``, predict the test images into ``out/pred``."""
    from stardist import Rays_GoldenSpiral, calculate_extents
    from stardist.models import Config3D, StarDist3D

    x_train, y_train, _ = stardist_data(dataset, "training")
    extents = calculate_extents(y_train)
    anisotropy = tuple(float(v) for v in np.max(extents) / extents)
    config = Config3D(
        rays=Rays_GoldenSpiral(96, anisotropy=anisotropy),
        grid=tuple(1 if a > 1.5 else 2 for a in anisotropy),
        anisotropy=anisotropy,
        n_channel_in=1,
        train_tensorboard=False,
    )
    shutil.rmtree(out / "model", ignore_errors=True)
    model = StarDist3D(config, name="model", basedir=str(out))
    smallest = tuple(int(v) for v in np.min([x.shape for x in x_train], axis=0))
    model.config.train_patch_size = stardist_patch_size(smallest, model._axes_div_by("ZYX"))
    print(f"config: anisotropy {anisotropy}, grid {config.grid}, patch {model.config.train_patch_size}", flush=True)
    model.prepare_for_training()
    stop = wall_clock_stop(60.0 * minutes)
    model.callbacks.append(stop)
    start = time.perf_counter()
    model.train(x_train, y_train, validation_data=(x_train, y_train))  # no validation set: the training volumes
    train_s = time.perf_counter() - start
    optimise_stardist_thresholds(model, x_train, y_train)
    x_test, _, items = stardist_data(dataset, "test", labels=False)
    seconds = []
    for x, item in zip(x_test, items):
        tic = time.perf_counter()
        labels, _ = model.predict_instances(x, n_tiles=model._guess_n_tiles(x))
        seconds.append(time.perf_counter() - tic)
        name = Path(item["image"]).name.replace(".nii.gz", "_instances.nii.gz")
        write_volume(out / "pred" / name, labels.T.astype(np.uint16), item["spacing"])
    timing = {"train_min": train_s / 60, "infer_s_per_vol": float(np.mean(seconds)), "train_steps": stop.steps}
    (out / "timing.json").write_text(json.dumps(timing))


# ---------------------------------------------------------------- classical (no training)


def run_classical(name: str, dataset: Path, work: Path) -> dict:
    """The ``classical`` row: ``membrane_ceiling.classical_instances`` (its parameters as they are there) on every
    test image at its own voxel grid, scored like ours."""
    from membrane_ceiling import classical_instances

    run_dir = work / name / "classical"
    _, gts = make_test_folders(dataset, run_dir)
    pred = run_dir / "pred"
    shutil.rmtree(pred, ignore_errors=True)
    pred.mkdir(parents=True)
    seconds = []
    for item in load_section(dataset, "test"):
        spacing = resolve_spacing(item["image"], item.get("spacing"))
        start = time.perf_counter()
        labels = classical_instances(read_volume(item["image"]), spacing)
        seconds.append(time.perf_counter() - start)
        write_volume(pred / Path(item["image"]).name, labels.astype(np.int32), spacing)
    print(f"[{name}] classical: {len(seconds)} test volumes, {np.mean(seconds):.1f} s each", flush=True)
    return {**score(gts, pred), "train_min": 0.0, "infer_s_per_vol": float(np.mean(seconds))}


# ---------------------------------------------------------------- results and table


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=4) + "\n")
    os.replace(tmp, path)


def method_flags(method: str, args: argparse.Namespace) -> str:
    """What a cached entry must match: our extra training flags, or the peer's budget."""
    if method == "ours_boxes":
        return f"{args.extra} {BOXES_ONLY}".strip()
    if method == "classical":
        return ""
    return args.extra if method == "ours" else f"--peer-minutes {args.peer_minutes:g}"


def is_done(row: dict, method: str, args: argparse.Namespace) -> bool:
    entry = row.get(method) or {}
    same = entry.get("flags", "") == method_flags(method, args) and entry.get("seed", 0) == args.seed
    return not args.force and entry.get("status") == "ok" and same


def run_method(method: str, name: str, dataset: Path, args: argparse.Namespace) -> dict:
    """One method on one dataset as a results entry: metrics and ``status`` ok, or the failure."""
    flags = method_flags(method, args)
    if method == "stardist" and not peer_installed():
        return {"status": NOT_INSTALLED}
    if method == "stardist" and args.no_peer:
        return {"status": "not run (--no-peer)"}
    if method == "ours_boxes" and args.no_boxes:
        return {"status": "not run (--no-boxes)"}
    if method == "classical" and SUITE[name].model.stain != "membrane":
        return {"status": "not run (a wall-stain method)"}
    try:
        if method in ("ours", "ours_boxes"):
            metrics = run_ours(name, dataset, args, method)
        elif method == "classical":
            metrics = run_classical(name, dataset, args.work)
        else:
            metrics = run_stardist(name, dataset, args.work, args.peer_minutes)
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        print(f"[{name}] {method} failed: {err}", flush=True)
        return {"status": f"failed: {str(err).splitlines()[0]}", "flags": flags, "seed": args.seed}
    today = datetime.date.today().isoformat()
    return {"status": "ok", "flags": flags, "seed": args.seed, "date": today, "cpu": cpu_name(), **metrics}


FULL_COLUMNS = ("det_f1", "seg_f1", "ctc_seg", "recall", "train_min", "infer_s_per_vol")


def method_cells(entry: dict | None, keys: tuple[str, ...] = FULL_COLUMNS) -> list[str]:
    """Det F1, Seg F1, CTC SEG, recall face-cut / whole, train min, infer s/vol of one entry (its status in the
    first cell otherwise; "-" for a recall an older cached row lacks)."""
    entry = entry or {"status": "not run"}
    if entry.get("status") != "ok":
        return [entry.get("status", "not run")] + [""] * (len(keys) - 1)
    cells = []
    for key in keys:
        if key == "recall":
            cells.append(" / ".join(_recall(entry.get(k)) for k in ("recall_face_cut", "recall_whole")))
        elif key in ("train_min", "infer_s_per_vol"):
            cells.append(f"{entry[key]:.1f}")
        else:
            cells.append(f"{entry[key]:.3f}")
    return cells


def _recall(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def markdown_table(results: dict) -> str:
    """The results as a markdown table in suite order, with notes on non-default flags and the machines."""
    columns = ("Det F1", "Seg F1", "CTC SEG", "recall cut / whole", "train min", "infer s/vol")
    header = ["dataset", "train vols / objects / masked"] + [f"ours {c}" for c in columns]
    header += ["boxes only Det F1", "boxes only Seg F1"] + [f"StarDist {c}" for c in columns]
    header += ["classical Det F1", "classical Seg F1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes, cpus = [], set()
    for name in [n for n in SUITE if n in results]:
        row = results[name]
        stats = row.get("dataset", {})
        label = name
        if (row.get("ours") or {}).get("flags"):
            label += " \\*"
            notes.append(f"\\* {name}: ours trained with non-default flags `{row['ours']['flags']}`.")
        cpus.update(e["cpu"] for e in (row.get(m) or {} for m in METHODS) if e.get("cpu"))
        counts = " / ".join(str(stats.get(k, "?")) for k in ("train_volumes", "objects", "masked"))
        cells = [label, counts] + method_cells(row.get("ours"))
        cells += method_cells(row.get("ours_boxes"), ("det_f1", "seg_f1")) + method_cells(row.get("stardist"))
        cells += method_cells(row.get("classical"), ("det_f1", "seg_f1"))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + (
        "\n\nOurs: the default `train.json` + `inference.json` commands (20% masks); boxes only: the same with"
        " `--mask_fraction 0.0` (the planned box-supervised mask loss teaches the masks); StarDist 3D: default"
        " `Config3D` on the full masks for the same wall-clock budget, its probability threshold optimised on the"
        " training volumes at NMS 0.4; classical (membrane stains only): no training, the seeded watershed of"
        " `scripts/membrane_ceiling.py` (wall-distance maxima as seeds) at the image's own grid."
        " Means over the 3 test volumes; Det F1 at 3D box IoU > 0.4, Seg F1 at mask"
        " IoU > 0.5; recall cut / whole: detection recall of the test objects with a voxel on a face of their"
        " volume and of the others (pooled over the volumes); infer s/vol as each tool logs it."
    )
    if cpus:
        text += f" Machine: {', '.join(sorted(cpus))}."
    return text + f" {run_dates(results)}" + "".join(f"\n\n{note}" for note in notes)


def run_dates(results: dict) -> str:
    """Which rows of each method ran on which day (a cached table mixes runs)."""
    parts = []
    for method, title in zip(METHODS, ("ours", "boxes only", "StarDist", "classical")):
        days: dict[str, list[str]] = {}
        for name in [n for n in SUITE if n in results]:
            entry = results[name].get(method) or {}
            if entry.get("date"):
                days.setdefault(entry["date"], []).append(name)
        if days:
            parts.append(f"{title} " + ", ".join(f"{d} ({', '.join(names)})" for d, names in sorted(days.items())))
    return ("Run dates: " + "; ".join(parts) + ".") if parts else ""


# ---------------------------------------------------------------- main


def announce(names: list[str], results: dict, args: argparse.Namespace) -> None:
    """Print what will run and about how long it takes."""
    peer = peer_installed() and not args.no_peer
    todo = {m: [n for n in names if m in args.methods and not is_done(results.get(n, {}), m, args)] for m in METHODS}
    minutes = (len(todo["ours"]) + (0 if args.no_boxes else len(todo["ours_boxes"]))) * (OURS_MINUTES + EXTRA_MINUTES)
    if peer:
        minutes += len(todo["stardist"]) * (args.peer_minutes + EXTRA_MINUTES)
    print(
        f"datasets: {', '.join(names)}; to run: ours on {len(todo['ours'])}, boxes only on "
        f"{0 if args.no_boxes else len(todo['ours_boxes'])}, StarDist on "
        f"{len(todo['stardist']) if peer else 0} ({'installed' if peer_installed() else NOT_INSTALLED}). "
        f"Expected runtime: about {minutes:.0f} min (~{OURS_MINUTES:.0f} min training + a few minutes per dataset"
        f" for ours{f', {args.peer_minutes:g} min + a few for StarDist' if peer else ''}).",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.stardist_worker:
        stardist_worker(Path(args.stardist_worker[0]), Path(args.stardist_worker[1]), args.peer_minutes)
        return
    args.work = args.work.resolve()
    names = selected(args.only)
    results = load_results(args.results)
    announce(names, results, args)
    for name in names:
        row = results.setdefault(name, {})
        dataset = prepare_dataset(name, args.work, args.seed, args.force)
        row["dataset"] = dataset_stats(dataset)
        for method in args.methods:
            if is_done(row, method, args):
                print(f"[{name}] {method}: cached", flush=True)
                continue
            row[method] = run_method(method, name, dataset, args)
            save_results(args.results, results)
    table = markdown_table(results)
    print(table)
    if not args.no_doc:
        replace_marked_section(DOC, SECTION, table)
        print(f"wrote the {SECTION} section of {DOC}")


if __name__ == "__main__":
    main()
