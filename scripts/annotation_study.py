"""Does "what to annotate next" pay? Masks chosen by the model's uncertainty against masks chosen at random.

On the synthetic HL60-like data of ``reproduce_table1.py --quick`` (13 training stacks, 8 test stacks), every
training seed starts from the same random 5% of the boxes with a voxel mask, trains, and then adds masks in
``--rounds`` rounds of ``--step`` of the boxes each (5% -> 25% by default), retraining after each round:

- ``uncertainty``: the boxes without a mask that the last round's model is least sure of
  (``weakseg_monai.inference.uncertainty``: disagreement of its masks under test-time flips, what the napari
  "What to annotate next" widget ranks by), most uncertain first over all training stacks;
- ``random``: boxes without a mask drawn at random (seeded).

Each model trains at the quick schedule of ``reproduce_table1.py`` through ``train.json`` (its ``ours20`` row's
paper rule: mask loss only where a mask exists, no box-supervised mask terms, so the arms differ only in which
masks they get) and is scored on the test stacks with the inference predictor. Runs are cached in
``WORKDIR/results.json`` (a stopped study resumes; ``--report`` rebuilds the table), the table goes to the
``annotation-study`` section of ``bundle/docs/results.md``. Numbers come from the runs, never typed in.

    python scripts/annotation_study.py                         # seeds 0-2, 27 trainings: ~25 min on 2 cores
    python scripts/annotation_study.py --seeds 0 --rounds 1    # a first look: 3 trainings
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from reproduce_table1 import PAPER_RULE, evaluate, save_result, spread, train

from weakseg_monai.data.datalist import load_section, partial_mask_from_instances, read_datalist
from weakseg_monai.data.io import read_volume, write_volume
from weakseg_monai.data.synthetic import write_synthetic_dataset
from weakseg_monai.families import load_model
from weakseg_monai.inference import WeakSegPredictor
from weakseg_monai.inference.uncertainty import flipped_predictions, mask_disagreement
from weakseg_monai.transforms import LoadWeakAnnotationd
from weakseg_monai.utils.machine import cpu_name
from weakseg_monai.utils.report import replace_marked_section

REPO = Path(__file__).resolve().parents[1]
ARMS = ("uncertainty", "random")
QUICK_STEPS = 13 * 25  # reproduce_table1.py --quick


def box_count(items: list[dict]) -> list[int]:
    return [len(item.get("box") or []) for item in items]


def initial_flags(counts: list[int], share: float, seed: int) -> list[np.ndarray]:
    """A seeded random ``share`` of all training boxes (at least one), as one flag array per stack."""
    total = sum(counts)
    chosen = np.random.default_rng(seed).permutation(total)[: max(1, round(share * total))]
    flat = np.zeros(total, dtype=bool)
    flat[chosen] = True
    return np.split(flat, np.cumsum(counts)[:-1])


def add_masks(flags: list[np.ndarray], scores: list[np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``flags`` with the ``n`` unflagged boxes of highest score flagged too (ties in random order)."""
    flat, score = np.concatenate(flags), np.concatenate(scores)
    free = np.nonzero(~flat)[0]
    order = free[np.lexsort((rng.random(len(free)), -score[free]))]
    flat = flat.copy()
    flat[order[:n]] = True
    return np.split(flat, np.cumsum([len(f) for f in flags])[:-1])


def uncertainty_scores(model_file: Path, items: list[dict], device: str) -> list[np.ndarray]:
    """Every training box's ``mask_disagreement`` under a trained model."""
    predictor = WeakSegPredictor(load_model(model_file, device), device=device)
    loader = LoadWeakAnnotationd()
    scores = []
    for item in items:
        d = loader(item)
        runs = flipped_predictions(predictor, torch.as_tensor(d["image"]), d["spacing"])
        scores.append(mask_disagreement(runs, np.asarray(d["box"])))
    return scores


def write_round_dataset(source: Path, items: list[dict], flags: list[np.ndarray], out: Path) -> Path:
    """A datalist of the training stacks with ``flags`` as their masks (written from the ground truth) and the
    source's validation stacks."""
    (out / "masks").mkdir(parents=True, exist_ok=True)
    training = []
    for item, annotated in zip(items, flags):
        gt = np.asarray(read_volume(item["gt_instances"]))
        mask = out / "masks" / f"{item['id']}_mask.nii.gz"
        write_volume(mask, partial_mask_from_instances(gt, annotated).astype(np.uint16), item["spacing"])
        training.append(dict(item, mask=str(mask), mask_annotated=[bool(v) for v in annotated]))
    datalist = {"training": training, "validation": load_section(source, "validation")}
    labels = read_datalist(source).get("labels")
    if labels:
        datalist["labels"] = labels
    (out / "datalist.json").write_text(json.dumps(datalist, indent=1))
    return out


def run_round(name: str, flags: list[np.ndarray], seed: int, args, data: Path, items, test_items) -> dict:
    """Train on ``flags``' masks and score on the test stacks."""
    run_dir = Path(args.workdir) / name
    dataset = write_round_dataset(data, items, flags, run_dir / "data")
    masks = int(sum(f.sum() for f in flags))
    print(f"== {name}: {masks} masks", flush=True)
    overrides = {
        "dataset_dir": str(dataset), "device": args.device, "seed": seed, "ckpt_dir": str(run_dir / "models"),
        "iterations": args.steps, "val_interval": args.steps, **PAPER_RULE,
    }
    seconds = train("train.json", run_dir, overrides)
    scores = evaluate(WeakSegPredictor(load_model(run_dir / "models" / "model.pt", args.device), device=args.device),
                      test_items)
    return {"name": name, "seed": seed, "steps": args.steps, "masks": masks, "boxes": int(sum(len(f) for f in flags)),
            "flags": [f.tolist() for f in flags], "train_seconds": seconds, **scores}


def study(args, data: Path, cache_path: Path) -> None:
    items = load_section(data, "training")
    test_items = load_section(data, "test")
    counts = box_count(items)
    per_round = max(1, round(args.step * sum(counts)))
    for seed in [int(s) for s in args.seeds.split(",") if s != ""]:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        start = f"start/seed{seed}"
        if start not in cache or cache[start]["steps"] != args.steps:
            save_result(cache_path, start, run_round(start, initial_flags(counts, args.start, seed), seed, args,
                                                     data, items, test_items))
        for arm in [a for a in args.arms.split(",") if a]:
            previous = start
            rng = np.random.default_rng([seed, ARMS.index(arm)])
            for r in range(1, args.rounds + 1):
                cache = json.loads(cache_path.read_text())
                name = f"{arm}/seed{seed}/round{r}"
                if name in cache and cache[name]["steps"] == args.steps:
                    previous = name
                    continue
                flags = [np.asarray(f, dtype=bool) for f in cache[previous]["flags"]]
                began = time.perf_counter()
                if arm == "uncertainty":
                    scores = uncertainty_scores(Path(args.workdir) / previous / "models" / "model.pt", items,
                                                args.device)
                else:
                    scores = [rng.random(len(f)) for f in flags]
                rank_seconds = time.perf_counter() - began
                result = run_round(name, add_masks(flags, scores, per_round, rng), seed, args, data, items,
                                   test_items)
                result["rank_seconds"] = rank_seconds
                print(json.dumps({k: v for k, v in result.items() if k != "flags"}), flush=True)
                save_result(cache_path, name, result)
                previous = name


def write_table(args, cache_path: Path) -> None:
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    runs = [r for r in cache.values() if r["steps"] == args.steps]
    starts = {r["seed"]: r for r in runs if r["name"].startswith("start/")}
    seeds = sorted(starts)
    boxes = next(iter(starts.values()))["boxes"] if starts else 0
    lines = [
        "# What to annotate next: masks chosen by uncertainty vs at random",
        "",
        f"Produced by `python scripts/annotation_study.py` on {datetime.date.today().isoformat()}: {cpu_name()}, "
        f"torch {torch.__version__}, device {args.device}. Synthetic HL60-like data of `reproduce_table1.py "
        f"--quick` (13 training stacks, {boxes} boxes; 8 test stacks), {args.steps} training steps per model, the "
        "paper's mask rule. Each seed starts from the same random masks, then each round adds masks to the boxes "
        "its last model is least sure of (disagreement of its masks under test-time flips: the napari ranking) "
        "or to random ones, and retrains. Seg F1 at mask IoU > 0.5 on the test stacks, mean ± half the range over "
        f"seeds {seeds}; the gain is uncertainty minus random, paired by seed.",
        "",
        "| masks | share of boxes | random Seg F1 | uncertainty Seg F1 | gain (paired) | seeds uncertainty ahead "
        "| random Det F1 | uncertainty Det F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if starts:
        start_seg = [starts[s]["seg_f1"] for s in seeds]
        start_det = [starts[s]["det_f1"] for s in seeds]
        lines.append(f"| {starts[seeds[0]]['masks']} | {starts[seeds[0]]['masks'] / boxes:.0%} | {spread(start_seg)} "
                     f"| (same start) | | | {spread(start_det)} | (same start) |")
    gains = []
    for r in range(1, args.rounds + 1):
        arm_runs = {arm: {x["seed"]: x for x in runs if x["name"].startswith(f"{arm}/") and
                          x["name"].endswith(f"/round{r}")} for arm in ARMS}
        paired = sorted(set(arm_runs["uncertainty"]) & set(arm_runs["random"]))
        if not paired:
            continue
        unc = [arm_runs["uncertainty"][s] for s in paired]
        rnd = [arm_runs["random"][s] for s in paired]
        diff = [u["seg_f1"] - v["seg_f1"] for u, v in zip(unc, rnd)]
        gains.append(float(np.mean(diff)))
        lines.append(
            f"| {unc[0]['masks']} | {unc[0]['masks'] / boxes:.0%} | {spread([x['seg_f1'] for x in rnd])} | "
            f"{spread([x['seg_f1'] for x in unc])} | {np.mean(diff):+.4f} | {sum(d > 0 for d in diff)} of "
            f"{len(diff)} | {spread([x['det_f1'] for x in rnd])} | {spread([x['det_f1'] for x in unc])} |"
        )
    if gains:
        verdict = "pays" if np.mean(gains) > 0 else "does not pay"
        lines += ["", f"Mean paired gain over the {len(gains)} rounds: {np.mean(gains):+.4f} Seg F1: ranking by "
                      f"uncertainty {verdict} on this data at this schedule."]
    text = "\n".join(lines) + "\n"
    print(text)
    replace_marked_section(args.out, "annotation-study", text)
    print(f"wrote the annotation-study section of {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(REPO / "runs" / "annotation_study"))
    parser.add_argument("--out", default=str(REPO / "bundle" / "docs" / "results.md"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma separated (paired across arms)")
    parser.add_argument("--arms", default=",".join(ARMS), help="uncertainty,random (default both)")
    parser.add_argument("--start", type=float, default=0.05, help="share of boxes with a mask at the start")
    parser.add_argument("--step", type=float, default=0.05, help="share of boxes given a mask per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=QUICK_STEPS, help="training steps per model")
    parser.add_argument("--report", action="store_true", help="only rebuild the table from the cached runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    unknown = set(a for a in args.arms.split(",") if a) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    work = Path(args.workdir)
    data = work / "data"
    if not (data / "datalist.json").is_file():
        write_synthetic_dataset(data, n_train=13, n_val=2, n_test=8, mask_fraction=0.2, seed=0)
    cache_path = work / "results.json"
    if not args.report:
        study(args, data, cache_path)
    write_table(args, cache_path)


if __name__ == "__main__":
    main()
