"""Benchmark: the paper's timing case (64 x 639 x 649 voxels, ~20 nuclei) on this machine's CPU.

In one run: generates the seeded large synthetic stack (SIM+ spacing 0.125 x 0.125 x 0.2 µm) as a TIFF,
runs the weak model and the VoxResNet + CC baseline end to end (load -> resample -> whole volume or
sliding window -> NMS / components -> mask paste -> write), each in a fresh process so its peak RSS is
its own, the bounded-memory case (a 700 x 700 x 80 stack at 1 x 1 x 2 µm, blockwise; ``--big-only`` runs just
that one), scores both against the ground truth at the input resolution, times one training step against
the backbone-only step, and runs the RoIAlign micro-benchmark. Prints a table and writes it with the
command and the machine into ``bundle/docs/README.md``.

    python scripts/benchmark.py [--baseline-ckpt runs/table1/voxresnet_cc/full/models/model.pt] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from bench_roi_align import format_rows  # noqa: E402
from bench_roi_align import run as roi_align_rows  # noqa: E402

from weakseg_monai.utils.machine import cpu_name  # noqa: E402

DOC = REPO / "bundle" / "docs" / "README.md"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def _proc_status_gb(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in GB, None where there is none."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1e6
    return None


def current_rss_gb() -> float:
    return _proc_status_gb("VmRSS") or 0.0


def peak_rss_gb() -> float:
    """This process's own peak RSS (VmHWM). ``ru_maxrss`` would report the parent's peak after fork + exec."""
    peak = _proc_status_gb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def worker(method: str, image: Path, gt: Path, ckpt: Path, out: Path) -> dict:
    """One end-to-end inference in this process; returns times, peak RSS and scores."""
    from weakseg_monai.data.instances import boxes_from_instances
    from weakseg_monai.inference import BaselinePredictor, WeakSegPredictor
    from weakseg_monai.inference.inputs import load_input
    from weakseg_monai.inference.outputs import save_prediction
    from weakseg_monai.metrics import detection_f1, segmentation_f1
    from weakseg_monai.networks import VoxResSegNet, WeakInstanceSegNet

    model = WeakInstanceSegNet() if method == "ours" else VoxResSegNet()
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    predictor = (WeakSegPredictor if method == "ours" else BaselinePredictor)(model.eval())
    start = time.perf_counter()
    array, spacing, affine = load_input(image)
    loaded = time.perf_counter()
    pred = predictor(torch.from_numpy(array.astype(np.float32))[None], spacing)
    predicted = time.perf_counter()
    save_prediction(pred, array, image, out, spacing, affine, preview=False)
    end = time.perf_counter()
    inference_peak = peak_rss_gb()  # before scoring reads the ground truth
    from weakseg_monai.data.io import read_volume

    truth = read_volume(gt)
    det = detection_f1(boxes_from_instances(truth), pred["boxes"])
    seg = segmentation_f1(truth, pred["instances"])
    return {
        "load_s": loaded - start,
        "predict_s": predicted - loaded,
        "write_s": end - predicted,
        "total_s": end - start,
        "voxels": int(array.size),
        "instances": len(pred["boxes"]),
        "maxrss_gb": inference_peak,
        "det_f1": det["f1"],
        "seg_f1": seg["f1"],
    }


BIG_SHAPE, BIG_SPACING = (700, 700, 80), (1.0, 1.0, 2.0)


def big_case(tmp: Path, seed: int) -> tuple[Path, Path, int]:
    """The bounded-memory case: a 700 x 700 x 80 float32 NIfTI at 1 x 1 x 2 µm (157 MB on disk, 8x more voxels
    at the working spacing), densely populated with nuclei."""
    from weakseg_monai.data.io import write_volume
    from weakseg_monai.data.synthetic import NucleusModel, generate_stack

    image, labels = generate_stack([seed, 7], BIG_SHAPE, BIG_SPACING, NucleusModel(n_cells=(1500, 1600)))
    write_volume(tmp / "big.nii.gz", image.astype(np.float32), BIG_SPACING)
    write_volume(tmp / "big_gt.nii.gz", labels.astype(np.uint16), BIG_SPACING)
    return tmp / "big.nii.gz", tmp / "big_gt.nii.gz", int(labels.max())


def run_big_case(tmp: Path, args) -> tuple[dict, int]:
    image, gt, n = big_case(tmp, args.seed)
    cmd = [sys.executable, __file__, "--worker", "ours", "--image", str(image), "--gt", str(gt)]
    cmd += ["--out", str(tmp / "big_out"), "--ckpt", args.ckpt, "--threads", str(torch.get_num_threads())]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(done.stdout.strip().splitlines()[-1]), n


def big_case_line(row: dict, n: int) -> str:
    gb = row["voxels"] * 4 / 1e9
    return (
        f"Bounded memory: a {BIG_SHAPE[0]} x {BIG_SHAPE[1]} x {BIG_SHAPE[2]} float32 NIfTI at "
        f"{BIG_SPACING[0]} x {BIG_SPACING[1]} x {BIG_SPACING[2]} µm ({gb:.2f} GB as float32, 8x more voxels at the "
        f"working spacing; {n} nuclei), read -> blockwise predict -> write in a fresh process: peak RSS "
        f"{row['maxrss_gb']:.2f} GB ({row['maxrss_gb'] / gb:.1f}x the float32 input), {row['total_s']:.0f} s, "
        f"{row['instances']} instances, Det F1 {row['det_f1']:.4f}, Seg F1 {row['seg_f1']:.4f}."
    )


def training_batch(batch_size: int, patch: tuple[int, int, int], seed: int = 0, annotated: float = 0.3):
    """A synthetic training batch at the working spacing: ``(images (B, 1, X, Y, Z), targets)``, nuclei
    cut by the patch border included, ``annotated`` of the boxes with a voxel mask (the rest box-only)."""
    from weakseg_monai.data.instances import boxes_from_instances
    from weakseg_monai.data.synthetic import NucleusModel, generate_stack

    rng = np.random.default_rng(seed)
    cells = max(2, int(np.prod(patch) / 16384))  # ~ the density of the default 128 x 128 x 32 stacks
    images, targets = [], []
    for i in range(batch_size):
        image, instances = generate_stack([seed, i], patch, (0.5, 0.5, 1.0), NucleusModel(n_cells=(cells, cells)))
        boxes = boxes_from_instances(instances)
        mask_annotated = rng.random(len(boxes)) < annotated
        mask_annotated[0] = True
        kept = np.concatenate([[0], np.nonzero(mask_annotated)[0] + 1]).astype(np.int32)
        partial = np.where(np.isin(instances, kept), instances, 0)
        image = image.astype(np.float32)
        images.append(torch.from_numpy((image - image.mean()) / (image.std() + 1e-6))[None])
        targets.append(
            {
                "box": torch.from_numpy(boxes).float(),
                "label": torch.zeros(len(boxes), dtype=torch.long),
                "mask_annotated": torch.from_numpy(mask_annotated),
                "instances": torch.from_numpy(partial.astype(np.int32)),
            }
        )
    return torch.stack(images), targets


def train_step_times(repeats: int = 9) -> dict:
    """Median seconds of one training step (batch 2 of 64 x 64 x 32) of the whole model, of the same model with
    the box-supervised mask loss on (``mask_context`` 0.25), and of the backbone alone."""
    from weakseg_monai.losses import BoxSupervisedMaskLoss
    from weakseg_monai.networks import MaskBranch, WeakInstanceSegNet

    model = WeakInstanceSegNet().train()
    boxed = WeakInstanceSegNet(
        mask_branch=MaskBranch(context=0.25, box_mask_loss=BoxSupervisedMaskLoss(warmup_iterations=0))
    ).train()
    boxed.load_state_dict(model.state_dict())
    x, targets = training_batch(2, (64, 64, 32))

    def step(net: torch.nn.Module, loss_of):
        """One SGD step of ``net`` on the loss ``loss_of()`` computes."""
        opt = torch.optim.SGD(net.parameters(), lr=1e-4)

        def run() -> None:
            loss = loss_of()
            opt.zero_grad()
            loss.backward()
            opt.step()

        return run

    full = step(model, lambda: sum(model(x, targets).values()))
    with_box_loss = step(boxed, lambda: sum(boxed(x, targets).values()))
    backbone = step(model.network.backbone, lambda: sum(f.mean() for f in model.network.backbone(x)))

    # interleaved rounds and medians: this machine's background load moves single timings by +-30 %
    times: dict[str, list[float]] = {"full": [], "box_loss": [], "backbone": []}
    full()
    with_box_loss()
    backbone()
    for _ in range(repeats):
        for name, fn in (("full", full), ("box_loss", with_box_loss), ("backbone", backbone)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {name: statistics.median(values) for name, values in times.items()}
    result["maxrss_gb"] = peak_rss_gb()
    return result


def train_memory(batch_size: int = 4, patch: tuple[int, int, int] = (64, 64, 128), steps: int = 3) -> dict:
    """Peak memory of training steps at the paper's batch (4 x 64 x 64 x 128): on a GPU with AMP (allocated
    and reserved by PyTorch's caching allocator), else on the CPU in float32 (this process's peak RSS)."""
    from weakseg_monai.networks import WeakInstanceSegNet

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = WeakInstanceSegNet().to(device).train()
    x, targets = training_batch(batch_size, patch)
    x = x.to(device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = current_rss_gb()
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cuda", enabled=device.type == "cuda"):
            loss = sum(model(x, targets).values())
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return {
            "device": torch.cuda.get_device_name(),
            "amp": True,
            "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
            "peak_reserved_gb": torch.cuda.max_memory_reserved() / 1e9,
            "s_per_step": (time.perf_counter() - start) / steps,
        }
    return {
        "device": "cpu",
        "amp": False,
        "maxrss_gb": peak_rss_gb(),
        "before_gb": before,
        "s_per_step": (time.perf_counter() - start) / steps,
    }


def median_row(runs: list[dict]) -> dict:
    """Median of each timing over repeated runs, the largest peak RSS, the (identical) scores."""
    row = dict(runs[0])
    for key in ("load_s", "predict_s", "write_s", "total_s"):
        row[key] = statistics.median(r[key] for r in runs)
    row["maxrss_gb"] = max(r["maxrss_gb"] for r in runs)
    row["repeats"] = len(runs)
    return row


def memory_line(memory: dict) -> str:
    head = "Training memory, batch 4 of 64 x 64 x 128 (x, y, z): "
    if memory["device"] == "cpu":
        return (
            head + f"no GPU here; on the CPU in float32 the process peaks at {memory['maxrss_gb']:.2f} GB RSS, "
            f"{memory['maxrss_gb'] - memory['before_gb']:.2f} GB above its size before the first step (activations, "
            f"gradients, optimizer state; {memory['s_per_step']:.1f} s per step). For the AMP number run "
            "`python scripts/benchmark.py --worker train-memory` on a GPU machine."
        )
    return (
        head + f"{memory['device']}, AMP: peak allocated {memory['peak_allocated_gb']:.2f} GB, reserved "
        f"{memory['peak_reserved_gb']:.2f} GB ({memory['s_per_step']:.2f} s per step)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(REPO / "bundle" / "models" / "model.pt"))
    parser.add_argument(
        "--baseline-ckpt", default=str(REPO / "runs" / "table1" / "voxresnet_cc" / "full" / "models" / "model.pt")
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=5, help="fresh-process runs per method (median reported)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update bundle/docs/README.md")
    parser.add_argument(
        "--worker",
        choices=["ours", "baseline", "train-step", "train-memory"],
        help="run one part only and print its JSON (train-memory: on a GPU, peak memory at batch 4 of "
        "64 x 64 x 128 with AMP); ours / baseline also need --image, --gt, --out",
    )
    parser.add_argument("--big-only", action="store_true", help="only the bounded-memory 700 x 700 x 80 case")
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "train-step":
        print(json.dumps(train_step_times()))
        return
    if args.worker == "train-memory":
        print(json.dumps(train_memory()))
        return
    if args.worker:
        ckpt = args.ckpt if args.worker == "ours" else args.baseline_ckpt
        print(json.dumps(worker(args.worker, Path(args.image), Path(args.gt), Path(ckpt), Path(args.out))))
        return

    from weakseg_monai.data.io import write_volume
    from weakseg_monai.data.synthetic import LARGE_SHAPE, LARGE_SPACING, NucleusModel, generate_stack

    tmp = Path(tempfile.mkdtemp(prefix="weakseg_bench_"))
    if args.big_only:
        print(big_case_line(*run_big_case(tmp, args)))
        return
    image, labels = generate_stack([args.seed], LARGE_SHAPE, LARGE_SPACING, NucleusModel(n_cells=(18, 24)))
    write_volume(tmp / "stack_t000.tif", image, LARGE_SPACING)
    write_volume(tmp / "stack_gt.tif", labels.astype(np.uint16), LARGE_SPACING)
    print(f"# stack {LARGE_SHAPE} (x, y, z) at {LARGE_SPACING} µm, {int(labels.max())} nuclei -> {tmp}")

    methods = [(m, c) for m, c in (("ours", args.ckpt), ("baseline", args.baseline_ckpt)) if Path(c).is_file()]
    for method, ckpt in (("ours", args.ckpt), ("baseline", args.baseline_ckpt)):
        if (method, ckpt) not in methods:
            print(f"# {method}: no checkpoint at {ckpt} (train it with scripts/reproduce_table1.py)")
    runs: dict[str, list[dict]] = {method: [] for method, _ in methods}
    for _ in range(args.repeats):  # interleaved fresh processes: single sub-second timings vary by +-30 % here
        for method, _ in methods:
            cmd = [sys.executable, __file__, "--worker", method, "--image", str(tmp / "stack_t000.tif")]
            cmd += ["--gt", str(tmp / "stack_gt.tif"), "--out", str(tmp / method), "--ckpt", args.ckpt]
            cmd += ["--baseline-ckpt", args.baseline_ckpt, "--threads", str(torch.get_num_threads())]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ))
            runs[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = {method: median_row(r) for method, r in runs.items()}
    steps, memory = (
        json.loads(
            subprocess.run(
                [sys.executable, __file__, "--worker", worker, "--threads", str(torch.get_num_threads())],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for worker in ("train-step", "train-memory")
    )
    roi = roi_align_rows()
    big = run_big_case(tmp, args)

    lines = [
        f"Command: `python scripts/benchmark.py{' --threads ' + str(args.threads) if args.threads else ''}`; "
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, CPU only.",
        "",
        f"Inference end to end (read TIFF -> resample -> network -> NMS / components -> paste -> write "
        f"TIFF), stack {LARGE_SHAPE[0]} x {LARGE_SHAPE[1]} x {LARGE_SHAPE[2]} (x, y, z) at 0.125 x 0.125 x 0.2 µm "
        f"with {int(labels.max())} nuclei, each run in a fresh process (Python start-up and imports not "
        f"counted), median of {args.repeats} interleaved runs per method:",
        "",
        "| method | total (s) | load (s) | predict (s) | write (s) | voxels / s | peak RSS (GB) | Det F1 | Seg F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"ours": "weak model (ours)", "baseline": "VoxResNet + CC baseline"}
    for method, r in rows.items():
        lines.append(
            f"| {names[method]} | {r['total_s']:.2f} | {r['load_s']:.2f} | {r['predict_s']:.2f} | "
            f"{r['write_s']:.2f} | {r['voxels'] / r['total_s'] / 1e6:.1f} M | {r['maxrss_gb']:.2f} | "
            f"{r['det_f1']:.4f} | {r['seg_f1']:.4f} |"
        )
    if len(rows) == 2:
        ours, base = rows["ours"], rows["baseline"]
        lines += [
            "",
            f"Ours / baseline: throughput {base['total_s'] / ours['total_s']:.2f}x, peak RSS "
            f"{ours['maxrss_gb'] / base['maxrss_gb']:.2f}x, Det F1 {ours['det_f1'] - base['det_f1']:+.4f}, "
            f"Seg F1 {ours['seg_f1'] - base['seg_f1']:+.4f}.",
        ]
    lines += [
        "",
        f"Training step, batch 2 of 64 x 64 x 32: whole model {steps['full']:.2f} s, with the box-supervised mask "
        f"loss {steps['box_loss']:.2f} s ({steps['box_loss'] / steps['full']:.2f}x), backbone only "
        f"{steps['backbone']:.2f} s (ratio {steps['full'] / steps['backbone']:.2f}x), peak RSS "
        f"{steps['maxrss_gb']:.2f} GB (synthetic nuclei, 30 % of them with masks).",
        "",
        memory_line(memory),
        "",
        big_case_line(*big),
        "",
        "3D RoIAlign forward + backward, 64 RoIs, 32 channels:",
        "",
    ]
    lines += format_rows(roi)
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        doc = DOC.read_text()
        block = f"{START}\n{text}\n{END}"
        if START in doc:
            doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.replace("## How to run", f"## Speed\n\n{block}\n\n## How to run")
        DOC.write_text(doc)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
