"""Benchmark of 3D RoIAlign forward + backward, side by side in one run.

Compares ``weakseg_monai.layers.roi_align_3d`` (all RoIs at once) with
(a) the same op called once per RoI in a Python loop, and
(b) one ``F.grid_sample`` over exactly the same sample points (border padding + zero mask, then
    ``avg_pool3d``) -- the memory-bound floor; run in float64 it is also the independent reference for the
    max-error column.

    python scripts/bench_roi_align.py [--rois 64 --channels 32 --sizes 7 14 --repeats 5 --threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from weakseg_monai.layers.roi_align import roi_align_3d
from weakseg_monai.utils.machine import cpu_name


def grid_sample_roi_align(features: torch.Tensor, rois: torch.Tensor, out: int, ratio: int) -> torch.Tensor:
    """RoIAlign (aligned, fixed ratio) as one grid_sample per image; RoIs must be split evenly over images."""
    n, c = features.shape[:2]
    sizes = features.shape[2:]
    k = rois.shape[0]
    per_image = k // n
    p = out * ratio
    steps = (torch.arange(p, dtype=features.dtype) + 0.5) / p  # sample positions in [0, 1) of the RoI
    coords, valid = [], torch.ones(k, p, p, p, dtype=torch.bool)
    for a in range(3):
        lo = rois[:, 1 + a, None] - 0.5
        length = rois[:, 4 + a, None] - rois[:, 1 + a, None]
        coord = lo + steps[None] * length  # (K, p)
        ok = (coord >= -1) & (coord <= sizes[a])
        shape = [k, 1, 1, 1]
        shape[1 + a] = p
        valid = valid & ok.view(shape)
        coord = coord.clamp(0, sizes[a] - 1)
        coords.append((2 * coord / (sizes[a] - 1) - 1).view(shape).expand(k, p, p, p))
    grid = torch.stack([coords[2], coords[1], coords[0]], dim=-1)  # grid_sample: (W, H, D) = (z, y, x)
    grid = grid.view(n, per_image * p, p, p, 3)
    sampled = F.grid_sample(
        features, grid.to(features.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )  # (N, C, per_image * p, p, p)
    sampled = sampled.view(n, c, per_image, p, p, p).permute(0, 2, 1, 3, 4, 5).reshape(k, c, p, p, p)
    sampled = sampled * valid[:, None].to(sampled.dtype)
    return F.avg_pool3d(sampled, ratio)


def _time(fn, features: torch.Tensor, repeats: int) -> float:
    def once():
        feats = features.detach().requires_grad_()
        fn(feats).sum().backward()

    once()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(rois_n: int = 64, channels: int = 32, sizes=(7, 14), ratio: int = 2, repeats: int = 5) -> list[dict]:
    """Time fwd+bwd of the three variants side by side; one row per output size."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, channels, 64, 64, 32, generator=gen)
    size = torch.tensor([64.0, 64.0, 32.0])
    centres = torch.rand(rois_n, 3, generator=gen) * size
    extents = (torch.rand(rois_n, 3, generator=gen) * 0.5 + 0.5) * torch.tensor([20.0, 20.0, 10.0])
    boxes = torch.cat([centres - extents / 2, centres + extents / 2], dim=1)  # some cross the border
    batch = (torch.arange(rois_n) * 2 // rois_n).float()[:, None]  # first half image 0, rest image 1
    rois = torch.cat([batch, boxes], dim=1)
    rows = []
    for s in sizes:
        ours = _time(lambda f, s=s: roi_align_3d(f, rois, s, 1.0, ratio, True), features, repeats)
        loop = _time(
            lambda f, s=s: torch.cat([roi_align_3d(f, rois[i : i + 1], s, 1.0, ratio, True) for i in range(rois_n)]),
            features,
            max(1, repeats // 2),
        )
        floor = _time(lambda f, s=s: grid_sample_roi_align(f, rois, s, ratio), features, repeats)
        reference = grid_sample_roi_align(features.double(), rois.double(), s, ratio)
        error = (roi_align_3d(features, rois, s, 1.0, ratio, True).double() - reference).abs().max().item()
        rows.append(
            {
                "size": s,
                "ours_ms": ours * 1e3,
                "loop_ms": loop * 1e3,
                "floor_ms": floor * 1e3,
                "loop_over_ours": loop / ours,
                "ours_over_floor": ours / floor,
                "max_error": error,
            }
        )
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    lines = [
        "| output | roi_align_3d (ms) | per-RoI loop (ms) | grid_sample floor (ms) | loop / ours | ours / floor "
        "| max abs err vs float64 ref |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}³ | {r['ours_ms']:.1f} | {r['loop_ms']:.1f} | {r['floor_ms']:.1f} | "
            f"{r['loop_over_ours']:.2f}x | {r['ours_over_floor']:.2f}x | {r['max_error']:.2e} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rois", type=int, default=64)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[7, 14])
    parser.add_argument("--ratio", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# 3D RoIAlign fwd+bwd: {args.rois} RoIs, {args.channels} channels, features (2, C, 64, 64, 32), "
        f"sampling_ratio {args.ratio}"
    )
    print(f"# machine: {cpu_name()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("\n".join(format_rows(run(args.rois, args.channels, args.sizes, args.ratio, args.repeats))))


if __name__ == "__main__":
    main()
