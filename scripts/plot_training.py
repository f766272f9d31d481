"""Training curves of one run: the loss terms per iteration and the validation metrics, from the TensorBoard event
files ``train.json`` writes to its ``output_dir``; one PNG for the model card or for a user's own run.

Usage: ``python scripts/plot_training.py RUN_DIR [--out RUN_DIR/training_curves.png] [--title TEXT]``.
Validation points are placed at the training iteration they ran after (validation every ``val_interval``
iterations, read from ``RUN_DIR/plan.json`` when the events count validation rounds instead).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

LOSSES = ("loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_mask_box")
VALIDATION = ("val_det_f1", "val_seg_f1", "score_thresh")


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``tag -> (steps, values)`` over every event file of ``run_dir``."""
    series: dict[str, list[tuple[int, float]]] = {}
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no TensorBoard event files (train.json writes them to its output_dir)")
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return {tag: tuple(np.asarray(v) for v in zip(*sorted(points))) for tag, points in series.items()}


def validation_iterations(steps: np.ndarray, run_dir: Path, last_iteration: int) -> np.ndarray:
    """Validation steps as training iterations: logged per validation round (1, 2, ...) they are multiplied by the
    plan's ``val_interval``."""
    plan = run_dir / "plan.json"
    if plan.is_file() and steps.size and steps.max() * 2 <= last_iteration:
        interval = int(json.loads(plan.read_text())["used"]["val_interval"])
        return steps * interval
    return steps


def smooth(values: np.ndarray, window: int = 25) -> np.ndarray:
    if values.size < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(np.pad(values, (window // 2, window - 1 - window // 2), mode="edge"), kernel, mode="valid")


def plot(run_dir: Path, out: Path, title: str = "") -> Path:
    scalars = read_scalars(run_dir)
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    last = 1
    for tag in LOSSES:
        if tag in scalars:
            steps, values = scalars[tag]
            last = max(last, int(steps.max()))
            line = ax_loss.plot(steps, smooth(values), label=tag, lw=1.6 if tag == "loss" else 1.0)[0]
            ax_loss.plot(steps, values, color=line.get_color(), alpha=0.15, lw=0.6)
    ax_loss.set(xlabel="iteration", ylabel="loss (25-iteration mean; raw faint)", title="training loss")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    for tag in VALIDATION:
        if tag in scalars:
            steps, values = scalars[tag]
            style = "--" if tag == "score_thresh" else "-"
            ax_val.plot(validation_iterations(steps, run_dir, last), values, style, marker="o", label=tag)
    ax_val.set(xlabel="iteration", ylabel="value", title="validation (calibrated threshold)", ylim=(0, 1.02))
    ax_val.legend(fontsize=8, loc="center right")
    ax_val.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    print(f"wrote {plot(args.run_dir, args.out or args.run_dir / 'training_curves.png', args.title)}")


if __name__ == "__main__":
    main()
