"""Benchmark: the paper's timing case (64 x 639 x 649 voxels, ~20 nuclei) on this machine's CPU.

In one run: generates the seeded large synthetic stack (SIM+ spacing 0.125 x 0.125 x 0.2 µm) as a TIFF,
runs the weak model and the VoxResNet + CC baseline end to end (load -> resample -> whole volume or
sliding window -> NMS / components -> mask paste -> write), each in a fresh process so its peak RSS is
its own, scores both against the ground truth at the input resolution, times one training step against
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


def peak_rss_gb() -> float:
    """This process's own peak RSS (VmHWM). ``ru_maxrss`` would report the parent's peak after fork + exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def worker(method: str, image: Path, gt: Path, ckpt: Path, out: Path) -> dict:
    """One end-to-end inference in this process; returns times, peak RSS and scores."""
    from weakseg_monai.data.instances import boxes_from_instances
    from weakseg_monai.inference import BaselinePredictor, WeakSegPredictor
    from weakseg_monai.inference.writer import load_input, save_prediction
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
        "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "det_f1": det["f1"],
        "seg_f1": seg["f1"],
    }


def train_step_times(repeats: int = 9) -> dict:
    """Median seconds of one training step (batch 2 of 64 x 64 x 32) of the whole model vs the backbone alone."""
    from weakseg_monai.networks import WeakInstanceSegNet

    model = WeakInstanceSegNet().train()
    x = torch.randn(2, 1, 64, 64, 32)
    inst = torch.zeros(64, 64, 32, dtype=torch.int32)
    inst[10:28, 10:28, 5:14] = 1
    inst[30:50, 35:52, 10:20] = 2
    target = {
        "box": torch.tensor([[10, 10, 5, 28, 28, 14], [30, 35, 10, 50, 52, 20]], dtype=torch.float32),
        "label": torch.zeros(2, dtype=torch.long),
        "mask_annotated": torch.tensor([True, True]),
        "instances": inst,
    }
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def full():
        loss = sum(model(x, [target, target]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def backbone():
        loss = sum(f.mean() for f in model.network.backbone(x))
        opt.zero_grad()
        loss.backward()
        opt.step()

    # interleaved rounds and medians: this machine's background load moves single timings by +-30 %
    times: dict[str, list[float]] = {"full": [], "backbone": []}
    full()
    backbone()
    for _ in range(repeats):
        for name, fn in (("full", full), ("backbone", backbone)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {name: statistics.median(values) for name, values in times.items()}
    result["maxrss_gb"] = peak_rss_gb()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(REPO / "bundle" / "models" / "model.pt"))
    parser.add_argument(
        "--baseline-ckpt", default=str(REPO / "runs" / "table1" / "voxresnet_cc" / "full" / "models" / "model.pt")
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update bundle/docs/README.md")
    parser.add_argument("--worker", choices=["ours", "baseline", "train-step"], help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "train-step":
        print(json.dumps(train_step_times()))
        return
    if args.worker:
        ckpt = args.ckpt if args.worker == "ours" else args.baseline_ckpt
        print(json.dumps(worker(args.worker, Path(args.image), Path(args.gt), Path(ckpt), Path(args.out))))
        return

    from weakseg_monai.data.io import write_volume
    from weakseg_monai.data.synthetic import LARGE_SHAPE, LARGE_SPACING, NucleusModel, generate_stack

    tmp = Path(tempfile.mkdtemp(prefix="weakseg_bench_"))
    image, labels = generate_stack([args.seed], LARGE_SHAPE, LARGE_SPACING, NucleusModel(n_cells=(18, 24)))
    write_volume(tmp / "stack_t000.tif", image, LARGE_SPACING)
    write_volume(tmp / "stack_gt.tif", labels.astype(np.uint16), LARGE_SPACING)
    print(f"# stack {LARGE_SHAPE} (x, y, z) at {LARGE_SPACING} µm, {int(labels.max())} nuclei -> {tmp}")

    rows = {}
    for method, ckpt in (("ours", args.ckpt), ("baseline", args.baseline_ckpt)):
        if not Path(ckpt).is_file():
            print(f"# {method}: no checkpoint at {ckpt} (train it with scripts/reproduce_table1.py)")
            continue
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            method,
            "--image",
            str(tmp / "stack_t000.tif"),
            "--gt",
            str(tmp / "stack_gt.tif"),
            "--out",
            str(tmp / method),
            "--ckpt",
            args.ckpt,
            "--baseline-ckpt",
            args.baseline_ckpt,
            "--threads",
            str(torch.get_num_threads()),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ))
        rows[method] = json.loads(done.stdout.strip().splitlines()[-1])
    steps = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--worker", "train-step", "--threads", str(torch.get_num_threads())],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    roi = roi_align_rows()

    lines = [
        f"Command: `python scripts/benchmark.py{' --threads ' + str(args.threads) if args.threads else ''}`; "
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, CPU only.",
        "",
        f"Inference end to end (read TIFF -> resample -> network -> NMS / components -> paste -> write "
        f"TIFF), stack {LARGE_SHAPE[0]} x {LARGE_SHAPE[1]} x {LARGE_SHAPE[2]} (x, y, z) at 0.125 x 0.125 x 0.2 µm "
        f"with {int(labels.max())} nuclei, each method in a fresh process (Python start-up and imports not counted):",
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
        lines += ["", f"Throughput ours / baseline: {rows['baseline']['total_s'] / rows['ours']['total_s']:.2f}x."]
    lines += [
        "",
        f"Training step, batch 2 of 64 x 64 x 32: whole model {steps['full']:.2f} s, backbone only "
        f"{steps['backbone']:.2f} s (ratio {steps['full'] / steps['backbone']:.2f}x), peak RSS "
        f"{steps['maxrss_gb']:.2f} GB.",
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
